"""Test-wide settings: Prefect runs against a throwaway home, never the user's."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest

_PREFECT_HOME = tempfile.mkdtemp(prefix="ce-prefect-home-")
atexit.register(shutil.rmtree, _PREFECT_HOME, ignore_errors=True)
os.environ.setdefault("PREFECT_HOME", _PREFECT_HOME)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
# Two cores: keep torch from oversubscribing when several things run at once.
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.fixture(scope="session")
def prefect_harness():
    """One Prefect test server for the whole session (cold start can take ~20 s here)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture()
def lake(tmp_path):
    from catalog_enhance.tasks.lake.storage import Lake

    return Lake.from_url(str(tmp_path / "lake"))


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-API HTTP server (moto) on a free loopback port, for the whole session.

    s3fs talks to it over HTTP exactly as it would to AWS; credentials and endpoint come from the
    standard variables, as in production.
    """
    import logging

    from moto.server import ThreadedMotoServer

    # The server's request lines (werkzeug, INFO, from its own threads) are noise, and they would go
    # to whatever handler the root logger has at the time: after a CliRunner test, Prefect's console
    # handler on a stream CliRunner has closed ('--- Logging error ---' in the next CLI test's output).
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        # s3fs + moto: a region in client_kwargs breaks bucket creation; the env var does not.
        "AWS_DEFAULT_REGION": "us-east-1",
        "CE_S3_ENDPOINT_URL": f"http://{host}:{port}",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield env["CE_S3_ENDPOINT_URL"]
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()


@pytest.fixture()
def s3_lake_url(s3_server, request):
    """A fresh bucket per test on the loopback S3 server, created here: a lake never creates its
    bucket unless CE_CREATE_BUCKET asks it to."""
    import re
    import uuid

    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:30].strip("-")
    bucket = f"ce-{name}-{uuid.uuid4().hex[:8]}"
    make_s3_bucket(s3_server, bucket)
    return f"s3://{bucket}/lake"


def make_s3_bucket(endpoint: str, bucket: str) -> None:
    """Create a bucket on the loopback S3 server (credentials from the `s3_server` variables)."""
    import botocore.session

    client = botocore.session.Session().create_client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=bucket)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tests train and run tiny models: one torch thread each is faster on a busy 2-core machine
    than two threads waiting on each other, and keeps results independent of the core count."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
