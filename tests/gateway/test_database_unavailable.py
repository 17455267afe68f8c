"""A database the gateway cannot reach is answered 503 "Database unavailable" with Retry-After (the request
was not applied: retry, here or on another replica), counted in gpuproof_database_unavailable_total; other
database errors stay 500. The real partition is tests/reliability/test_netfaults.py (namespaces, PostgreSQL);
this is the same mapping where neither is available."""

from __future__ import annotations

import pytest
from gpuproof.gateway import metrics
from sqlalchemy import exc as sa_exc


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'gateway.db'}"


@pytest.fixture
def database_url(sqlite_url):  # the mapping does not depend on the database: SQLite only
    return sqlite_url


def _failing_reader(error: Exception):
    def reader():
        raise error
    return reader


@pytest.mark.parametrize("error", [
    sa_exc.OperationalError("SELECT 1", {}, OSError("connection timeout expired")),
    sa_exc.InterfaceError("SELECT 1", {}, OSError("the connection is closed")),
    sa_exc.TimeoutError("QueuePool limit of size 20 overflow 30 reached, connection timed out"),
])
def test_an_unreachable_database_is_503_with_retry_after(gateway, monkeypatch, error):
    before = metrics.DATABASE_UNAVAILABLE._value.get()
    monkeypatch.setattr(gateway.app.state.gp.db, "reader", _failing_reader(error))
    r = gateway.client.get("/v1/log/head")
    assert r.status_code == 503, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert int(r.headers["Retry-After"]) >= 1
    assert r.json()["title"] == "Database unavailable" and "not applied" in r.json()["detail"]
    assert metrics.DATABASE_UNAVAILABLE._value.get() - before == 1


def test_a_statement_the_database_refuses_stays_500(gateway, monkeypatch):
    error = sa_exc.IntegrityError("INSERT", {}, ValueError("duplicate key"))
    monkeypatch.setattr(gateway.app.state.gp.db, "reader", _failing_reader(error))
    r = gateway.client.get("/v1/log/head")
    assert r.status_code == 500 and "Retry-After" not in r.headers, r.text
    assert r.json()["title"] == "Internal error"
