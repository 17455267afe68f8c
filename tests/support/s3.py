"""A real S3-compatible server for tests: moto's server (werkzeug, speaking the S3 REST API) on a free
loopback port, in a thread of the test process. Gateways under test reach it over HTTP like any S3."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.support.server import free_port

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "gpuproof-test", "AWS_SECRET_ACCESS_KEY": "gpuproof-test-secret",
               "AWS_DEFAULT_REGION": "us-east-1"}


@dataclass
class S3:
    endpoint: str
    bucket: str
    client: object  # a boto3 S3 client for the test's own looks at the bucket

    def settings(self, prefix: str = "gpuproof/uploads/") -> dict:
        """Gateway settings (keyword arguments of gateway.settings.Settings) that store blobs here."""
        return {"blob_store": "s3", "s3_bucket": self.bucket, "s3_endpoint_url": self.endpoint,
                "s3_region": "us-east-1", "s3_prefix": prefix}

    def env(self, prefix: str = "gpuproof/uploads/") -> dict[str, str]:
        """The same as environment variables, with the credentials, for a gateway process."""
        return CREDENTIALS | {f"GPUPROOF_{k.upper()}": v for k, v in self.settings(prefix).items()}

    def keys(self) -> list[str]:
        listed = self.client.list_objects_v2(Bucket=self.bucket)  # type: ignore[attr-defined]
        return sorted(o["Key"] for o in listed.get("Contents", []))


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3(moto_endpoint, monkeypatch) -> S3:
    """A fresh bucket on the session's S3 server, and its credentials in this process's environment."""
    import boto3

    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    client = boto3.session.Session().client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    bucket = f"gp-{secrets.token_hex(6)}"
    client.create_bucket(Bucket=bucket)
    return S3(moto_endpoint, bucket, client)
