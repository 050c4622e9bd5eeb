"""pytest fixtures for a local S3 (moto's threaded server on 127.0.0.1): real boto3 calls, no network beyond loopback.

Use from conftest.py: from retail_dagster_tests.s3_server import moto_server, s3_client, s3_bucket, s3_env
"""

from __future__ import annotations

import socket
import uuid

import pytest

REGION = "us-east-1"
# Dummy credentials: boto3 needs some to sign requests; moto accepts anything. Never real ones in tests.
DUMMY_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def moto_server():
    """Endpoint URL (http://127.0.0.1:<port>) of a moto server running for the whole session (S3, KMS, ...)."""
    from moto.server import ThreadedMotoServer

    patch = pytest.MonkeyPatch()
    for name, value in DUMMY_ENV.items():
        patch.setenv(name, value)
    # A developer's profile or config must not leak into tests (or tests into their account).
    patch.delenv("AWS_PROFILE", raising=False)
    patch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    patch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
        patch.undo()


@pytest.fixture(scope="session")
def s3_client(moto_server):
    """A real boto3 S3 client talking to the moto server."""
    import boto3

    return boto3.client("s3", endpoint_url=moto_server, region_name=REGION)


@pytest.fixture
def s3_bucket(s3_client):
    """A fresh, empty bucket for one test (its name)."""
    name = f"test-{uuid.uuid4().hex[:20]}"
    s3_client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_env(moto_server, monkeypatch):
    """Points code that reads AWS_ENDPOINT_URL_S3 (core.loading.make_s3_client, boto3 itself) at the moto server."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server)
    return moto_server
