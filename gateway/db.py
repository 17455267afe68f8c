"""Engines and sessions.

SQLite (the embedded default) runs in WAL mode; writers use their own engine whose transactions take the
write lock when they begin (BEGIN IMMEDIATE), so concurrent writers queue instead of failing with a stale
snapshot, while readers never wait for writers. PostgreSQL uses one engine and serialises log appends
with a row lock on log_head; rows about to change are read with `locked` (SELECT ... FOR UPDATE).
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker


def _use_wal(path: str) -> None:
    """Put the database file in WAL mode, once, before any pooled connection exists (the mode is stored
    in the file). Switching it needs the file to itself, and SQLite answers "database is locked" at once,
    without its busy wait, when another connection is active: done on every connect, it failed whenever
    the start-up sweep's first connection raced a request's. Another process starting on the same file
    at the same moment is waited for (up to 30 s)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            with contextlib.closing(sqlite3.connect(path, timeout=30)) as conn:
                conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _sqlite_engine(url: str, immediate: bool) -> Engine:
    path = url.split("sqlite:///", 1)[-1]
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        _use_wal(path)
    # as many connections as the thread pool has threads (40), so that none waits for a connection
    engine = create_engine(url, connect_args={"check_same_thread": False, "isolation_level": None,
                                              "timeout": 30}, pool_size=20, max_overflow=30, pool_timeout=60)

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn, _record):  # noqa: ANN001
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):  # noqa: ANN001
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine

T = TypeVar("T")


def locked(session: Session, model: type[T], key: object) -> T | None:
    """`session.get` for a row about to change: read afresh and locked until the transaction ends.

    On PostgreSQL this is SELECT ... FOR UPDATE: two transactions that both read a challenge as
    "committed" would otherwise both judge it (two verdicts in the log) or both draw an opening request.
    SQLite's write transactions (BEGIN IMMEDIATE) already exclude each other; there it is a plain read.
    Lock order, to rule out deadlocks: job, then its audits, then a device, then challenges (by id), then
    the log head.
    """
    return session.get(model, key, with_for_update=True, populate_existing=True)


def take_turns(session: Session, space: int, key: str | None = None) -> None:
    """Make the transactions that call this with the same (space, key) run one at a time, until each ends:
    on PostgreSQL a transaction-scoped advisory lock (for what has no row to lock: a tenant's endpoint count,
    the open challenges of new devices) on (space, hashtext(key)), or (space, 0) without a key (the lock
    earlier versions took, so that replicas of both take turns during a rolling upgrade); SQLite's write
    transactions already run one at a time."""
    if session.get_bind().dialect.name == "postgresql":
        if key is None:
            session.execute(text("SELECT pg_advisory_xact_lock(:space, 0)"), {"space": space})
        else:
            session.execute(text("SELECT pg_advisory_xact_lock(:space, hashtext(:key))"), {"space": space, "key": key})


class Database:
    """Session factories for reads and for writes over one database URL."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            self.engine = _sqlite_engine(url, immediate=False)
            self.write_engine = _sqlite_engine(url, immediate=True)
        else:
            self.engine = self.write_engine = create_engine(url, pool_size=20, max_overflow=30, pool_pre_ping=True,
                                                            pool_timeout=60)
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        self._write = sessionmaker(self.write_engine, expire_on_commit=False)

    def reader(self) -> Session:
        return self._read()

    def writer(self) -> Session:
        return self._write()

    def dispose(self) -> None:
        self.engine.dispose()
        if self.write_engine is not self.engine:
            self.write_engine.dispose()
