"""An S3-API HTTP server for the object store's tests: moto's standalone server, on a free local port.

MinIO is not installable here (no package registry this project can reach carries it); moto's server
(`moto[server]`, `ThreadedMotoServer`) is the only S3-API server the registries offer. It implements S3's HTTP
API in Python, in a thread of the test process: the code under test talks to it with real boto3 over real HTTP
(signing, HEAD, GET, PUT, error codes), exactly as it would to AWS S3 or MinIO. It is not AWS itself: what
moto does not emulate (consistency under load, throttling) is not tested here.

`s3_endpoint` starts one server per session; `adapter_store` gives each test a bucket of its own and boto3's
credentials (moto accepts any) through the environment, where boto3's own credential chain finds them.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """The URL of a running S3-API server: `http://127.0.0.1:PORT`."""
    from moto.server import ThreadedMotoServer  # here: only the tests that use it pay for the import

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@dataclass(frozen=True)
class AdapterStore:
    """One test's bucket: its `s3://` URL, the endpoint, and a boto3 client to look at or tamper with objects."""

    url: str
    endpoint: str
    bucket: str
    prefix: str
    client: object

    def keys(self) -> list[str]:
        listed = self.client.list_objects_v2(Bucket=self.bucket).get("Contents", [])
        return sorted(o["Key"] for o in listed)


@pytest.fixture
def adapter_store(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> AdapterStore:
    for name, value in (("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"),
                        ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    import boto3

    bucket = f"flywheel-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket=bucket)
    return AdapterStore(f"s3://{bucket}/team/adapters", s3_endpoint, bucket, "team/adapters", client)
