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
import sys
from pathlib import Path

import pytest

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
    """The reference client code, imported afresh with the environment pointing at
    ``reproducible_server`` (it makes its boto3 client at import), for patterns whose
    check depends on one exact greedy answer."""
    saved = harness.apply_client_env(reproducible_server, tmp_path_factory.mktemp("aws-env"))
    cached = sys.modules.pop("seed_patterns", None)
    try:
        yield importlib.import_module("seed_patterns")
    finally:
        harness.restore_env(saved)
        sys.modules.pop("seed_patterns", None)
        if cached is not None:
            sys.modules["seed_patterns"] = cached


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
