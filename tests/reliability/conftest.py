"""Reliability tests reuse the gateway fixtures; `postgres_url` is a fresh PostgreSQL database."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from tests.gateway.conftest import gateway  # noqa: F401

PG = "host=127.0.0.1 port=5432 user=postgres dbname=test"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database (127.0.0.1:5432, trust auth) for one test, dropped afterwards; the test
    skips, saying why, where there is no usable server."""
    from tests.conftest import _PG

    if _PG is not None:
        pytest.skip(_PG)
    import psycopg

    name = f"gp_{secrets.token_hex(6)}"
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
