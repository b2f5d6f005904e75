"""Helpers shared by the Basalt integration tests.

Nothing in this module starts a server at import time; servers are started by the
fixtures in conftest.py (or explicitly by a test through ``BasaltServer``).
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import json
import math
import os
import secrets
import shutil
import signal
import socket
import string
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import boto3
from botocore.config import Config

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
REFERENCE_PATTERNS = REPO_ROOT.parent / "shared" / "reference" / "invocation-patterns.md"

REGION = "us-east-1"
HEALTH_TIMEOUT_S = 120.0

# Servers that are currently running (used to attach log tails to failure reports).
RUNNING: list["BasaltServer"] = []


@atexit.register
def _stop_leftover_servers() -> None:
    for srv in list(RUNNING):
        srv.stop()

# Environment variables that could redirect or re-authenticate boto3 / the AWS CLI
# away from the server under test.
_AWS_ENV_TO_CLEAR = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_BEARER_TOKEN_BEDROCK",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
    "AWS_MAX_ATTEMPTS",
    "AWS_RETRY_MODE",
    "AWS_CA_BUNDLE",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)


def basalt_bin() -> Path:
    override = os.environ.get("BASALT_BIN")
    if override:
        return Path(override)
    return REPO_ROOT / "target" / "release" / "basalt"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def models_dir() -> Path:
    """The model cache the tests read the default models from."""
    return Path(os.environ.get("BASALT_MODELS_DIR", Path.home() / ".cache/basalt/models"))


def linked_models_dir(root: Path) -> Path:
    """A model cache of its own under `root` that links the default models, so that an
    import writes only into this test's cache."""
    models = root / "models"
    models.mkdir()
    for entry in models_dir().iterdir():
        if entry.name != "imported":
            (models / entry.name).symlink_to(entry)
    return models


def random_access_key_id() -> str:
    alphabet = string.ascii_uppercase + "234567"
    return "AKIA" + "".join(secrets.choice(alphabet) for _ in range(16))


def random_secret_access_key() -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(40))


class ServerStartError(RuntimeError):
    pass


class BasaltServer:
    """One ``basalt serve`` process on 127.0.0.1 with its own data dir and root keys."""

    def __init__(self, workdir: Path, name: str = "basalt", extra_env: dict | None = None,
                 config_file: Path | None = None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.extra_env = dict(extra_env or {})
        self.config_file = config_file
        self.data_dir = self.workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / f"{name}.log"
        self.access_key_id = random_access_key_id()
        self.secret_access_key = random_secret_access_key()
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self._log_fh = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def server_env(self) -> dict:
        env = os.environ.copy()
        env["BASALT_ROOT_ACCESS_KEY_ID"] = self.access_key_id
        env["BASALT_ROOT_SECRET_ACCESS_KEY"] = self.secret_access_key
        env.setdefault("RUST_BACKTRACE", "1")
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = HEALTH_TIMEOUT_S) -> "BasaltServer":
        binary = basalt_bin()
        if not binary.exists():
            raise ServerStartError(
                f"basalt binary not found at {binary}; build it with `cargo build --release` "
                "or point BASALT_BIN at it")
        last_error = None
        for _attempt in range(3):  # a fresh port each time, in case of a bind race
            self.port = free_port()
            cmd = [str(binary), "serve", "--bind", f"127.0.0.1:{self.port}",
                   "--data-dir", str(self.data_dir)]
            if self.config_file is not None:
                cmd += ["--config", str(self.config_file)]
            self._log_fh = open(self.log_path, "ab")
            self._log_fh.write(f"\n=== {' '.join(cmd)}\n".encode())
            self._log_fh.flush()
            self.proc = subprocess.Popen(
                cmd, env=self.server_env(), stdin=subprocess.DEVNULL,
                stdout=self._log_fh, stderr=subprocess.STDOUT, start_new_session=True)
            RUNNING.append(self)
            try:
                self.wait_healthy(timeout)
                return self
            except ServerStartError as e:
                last_error = e
                exited = self.proc.poll() is not None
                self.stop()
                if not exited:
                    break  # it ran but never became healthy: retrying will not help
        raise last_error  # type: ignore[misc]

    def wait_healthy(self, timeout: float = HEALTH_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise ServerStartError(
                    f"{self.name}: basalt exited with status {self.proc.returncode} before "
                    f"becoming healthy\n--- log tail ({self.log_path}) ---\n{self.log_tail()}")
            try:
                status, _body = self.health()
                if status == 200:
                    return
                last = f"HTTP {status}"
            except (OSError, urllib.error.URLError) as e:
                last = repr(e)
            time.sleep(0.25)
        raise ServerStartError(
            f"{self.name}: GET /health did not return 200 within {timeout:.0f}s (last: {last})\n"
            f"--- log tail ({self.log_path}) ---\n{self.log_tail()}")

    def health(self) -> tuple[int, bytes]:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(self.url + "/health", timeout=5) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)
        if self in RUNNING:
            RUNNING.remove(self)
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None

    def log_tail(self, max_lines: int = 150) -> str:
        try:
            with open(self.log_path, "rb") as f:
                data = f.read()
        except OSError as e:
            return f"<no log: {e}>"
        lines = data.decode("utf-8", "replace").splitlines()
        return "\n".join(lines[-max_lines:])

    # ------------------------------------------------------------------ clients
    def client(self, service: str = "bedrock-runtime", *, access_key_id: str | None = None,
               secret_access_key: str | None = None, max_attempts: int = 1,
               read_timeout: int = 120, **config_kwargs):
        """A boto3 client with everything explicit (independent of the process env)."""
        cfg = Config(retries={"max_attempts": max_attempts, "mode": "standard"},
                     read_timeout=read_timeout, connect_timeout=10, **config_kwargs)
        return boto3.session.Session().client(
            service,
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=access_key_id or self.access_key_id,
            aws_secret_access_key=secret_access_key or self.secret_access_key,
            config=cfg,
        )

    def cli(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run ``basalt <args...>`` (e.g. ``keys create --data-dir DIR``)."""
        proc = subprocess.run([str(basalt_bin()), *args], env=self.server_env(),
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"basalt {' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout}\n"
                f"stderr:\n{proc.stderr}")
        return proc


def bearer_client(srv: "BasaltServer", service: str, token: str, monkeypatch):
    """What a Bedrock API key user writes: only the token in the environment. ``srv`` must
    serve HTTPS (``tls_url``, ``ca``): botocore sends bearer tokens only there."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_BEARER_TOKEN_BEDROCK", token)
    return boto3.session.Session().client(
        service, endpoint_url=srv.tls_url, region_name=REGION, verify=str(srv.ca),
        config=Config(retries={"max_attempts": 1}))


# ---------------------------------------------------------------------- client env
def apply_client_env(server: BasaltServer, scratch: Path) -> dict:
    """Point boto3 / the AWS CLI at ``server`` through the environment.

    Returns the previous values so that ``restore_env`` can undo it.
    """
    scratch.mkdir(parents=True, exist_ok=True)
    keys = set(_AWS_ENV_TO_CLEAR) | {k for k in os.environ if k.startswith("AWS_ENDPOINT_URL")}
    new = {
        "AWS_ENDPOINT_URL": server.url,
        "AWS_ACCESS_KEY_ID": server.access_key_id,
        "AWS_SECRET_ACCESS_KEY": server.secret_access_key,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        # Keep any ~/.aws config/credentials of the machine out of the picture.
        "AWS_CONFIG_FILE": str(scratch / "aws-config-does-not-exist"),
        "AWS_SHARED_CREDENTIALS_FILE": str(scratch / "aws-credentials-does-not-exist"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    no_proxy = ",".join(filter(None, [os.environ.get("NO_PROXY") or os.environ.get("no_proxy"),
                                      "127.0.0.1", "localhost"]))
    new["NO_PROXY"] = new["no_proxy"] = no_proxy
    keys |= set(new)
    saved = {k: os.environ.get(k) for k in keys}
    for k in keys:
        os.environ.pop(k, None)
    os.environ.update(new)
    # boto3's default session caches credentials once resolved; start a fresh one.
    boto3.DEFAULT_SESSION = None
    return saved


def restore_env(saved: dict) -> None:
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    boto3.DEFAULT_SESSION = None


@contextlib.contextmanager
def seed_pointed_at(server: BasaltServer, scratch: Path):
    """The reference client code, imported afresh with the environment pointing at
    ``server`` (it makes its boto3 client at import); the main server's copy comes back
    afterwards."""
    saved = apply_client_env(server, scratch)
    cached = sys.modules.pop("seed_patterns", None)
    try:
        yield importlib.import_module("seed_patterns")
    finally:
        restore_env(saved)
        sys.modules.pop("seed_patterns", None)
        if cached is not None:
            sys.modules["seed_patterns"] = cached


def find_aws_cli() -> str | None:
    candidate = Path(sys.executable).parent / "aws"
    if candidate.exists():
        return str(candidate)
    return shutil.which("aws")


# ---------------------------------------------------------------------- payload helpers
def make_png(width: int = 16, height: int = 16) -> bytes:
    """A valid RGB PNG (a small gradient), built by hand with zlib + struct."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + tag + data
                + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))

    rows = []
    for y in range(height):
        row = bytearray([0])  # filter type 0 (None)
        for x in range(width):
            row += bytes([(x * 255) // max(1, width - 1), (y * 255) // max(1, height - 1), 128])
        rows.append(bytes(row))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"".join(rows), 9)) + chunk(b"IEND", b""))


def read_json_body(response) -> dict:
    return json.loads(response["body"].read())


def stream_chunks(response) -> list[dict]:
    """Decode every ``chunk`` event of an InvokeModelWithResponseStream response."""
    chunks = []
    for event in response["body"]:
        assert set(event) == {"chunk"}, f"unexpected stream event {event!r}"
        raw = event["chunk"]["bytes"]
        assert isinstance(raw, (bytes, bytearray)) and raw, "chunk.bytes must be non-empty bytes"
        chunks.append(json.loads(raw))
    return chunks


def stream_events(response) -> list[tuple[str, dict]]:
    """Flatten a ConverseStream response into (event name, payload) pairs."""
    events = []
    for event in response["stream"]:
        assert len(event) == 1, f"stream event with several members: {event!r}"
        (name, payload), = event.items()
        events.append((name, payload))
    return events


def error_code(exc) -> str:
    return exc.response["Error"]["Code"]


def error_message(exc) -> str:
    return exc.response["Error"].get("Message", "")


def http_status(resp_or_exc) -> int:
    meta = resp_or_exc.response["ResponseMetadata"] if hasattr(resp_or_exc, "response") \
        else resp_or_exc["ResponseMetadata"]
    return meta["HTTPStatusCode"]


# ---------------------------------------------------------------------- vector math (no numpy)
def norm(v) -> float:
    return math.sqrt(sum(x * x for x in v))


def cosine(a, b) -> float:
    assert len(a) == len(b)
    na, nb = norm(a), norm(b)
    assert na > 0 and nb > 0, "zero vector"
    return sum(x * y for x, y in zip(a, b)) / (na * nb)


def ranking(query_vec, doc_vecs) -> list[int]:
    scores = [cosine(query_vec, d) for d in doc_vecs]
    return sorted(range(len(doc_vecs)), key=lambda i: scores[i], reverse=True)


def llama3_prompt(user: str, system: str | None = None) -> str:
    p = "<|begin_of_text|>"
    if system:
        p += f"<|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>"
    p += (f"<|start_header_id|>user<|end_header_id|>\n\n{user}<|eot_id|>"
          "<|start_header_id|>assistant<|end_header_id|>\n\n")
    return p
