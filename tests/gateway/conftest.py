"""Gateway fixtures: a fresh database per test, on SQLite and on the PostgreSQL at 127.0.0.1:5432."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.settings import Settings

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _postgres_reason() -> str | None:
    try:
        import psycopg

        with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=test", connect_timeout=3):
            return None
    except Exception as exc:  # any failure means: no usable server here
        return f"PostgreSQL at 127.0.0.1:5432 is not usable ({type(exc).__name__}: {str(exc).strip()[:80]})"


_PG = _postgres_reason()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'gateway.db'}"
        return
    if _PG is not None:
        pytest.skip(_PG)
    import psycopg

    name = f"gp_{secrets.token_hex(6)}"
    with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=test", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=test", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Gateway:
    client: TestClient
    settings: Settings
    app: object


@pytest.fixture
def gateway(database_url, tmp_path):
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url, verify_test_shape="16,256,64,3",
                        challenge_interval_s=3600, provider_rate_per_s=1000, ip_rate_per_s=10000)
    app = create_app(settings)
    with TestClient(app) as client:
        yield Gateway(client, settings, app)
