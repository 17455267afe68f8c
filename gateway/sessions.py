"""Database sessions as dependencies: a read session per request, and a write session that must end its
transaction before the endpoint returns (LEFT_OPEN, checked by the test suite)."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, ParamSpec, TypeVar

import anyio
import anyio.lowlevel
import anyio.to_thread
from fastapi import Depends, Request, Response
from gpuproof.gateway.db import Database
from gpuproof.gateway.state import StateDep
from pydantic import TypeAdapter
from sqlalchemy.orm import Session

# The session dependencies are async generators: the session is made and closed on the event loop
# (making one does no I/O; closing ends its transaction with a ROLLBACK, which never waits for a lock),
# and the endpoint uses it in its worker thread. A sync generator would take a worker-thread hop to close.
# Write sessions close when the endpoint has returned and its answer is serialized (scope="function"),
# which for a sync endpoint takes a worker thread. So an endpoint must leave no write transaction open
# when it returns: on SQLite that transaction holds the write lock, and with every worker thread waiting
# for that lock nobody serializes the answer that would release it (a stall until the 30 s busy
# timeout). Build answers before the commit (or use `rolled_back`); a write session that reaches its
# close with a transaction open is logged and listed in LEFT_OPEN, which the test suite checks is empty.
LEFT_OPEN: list[str] = []
log = logging.getLogger("gpuproof.gateway")


async def read_session(state: StateDep) -> AsyncIterator[Session]:
    session = state.db.reader()
    try:
        yield session
    finally:
        session.close()


T = TypeVar("T")
ReadSessionDep = Annotated[Session, Depends(read_session)]

# Threads of the reads' own, per event loop (gateway.app's lifespan sizes it: settings.read_threads). Blocking
# work otherwise shares `worker_threads` threads, and under a flood of writes those wait in turn for SQLite's
# write lock (or PostgreSQL's row locks), each a transaction long: a read queued behind them waited for all of
# them (issue 18; docs/performance.md, "Public reads at scale"). Reads take no write lock, so they never queue
# behind one here.
_READ_THREADS: anyio.lowlevel.RunVar[anyio.CapacityLimiter] = anyio.lowlevel.RunVar("gpuproof_read_threads")
DEFAULT_READ_THREADS = 3
P = ParamSpec("P")


def threads_of_their_own(var: anyio.lowlevel.RunVar[anyio.CapacityLimiter], total: int | None,
                         default: int) -> anyio.CapacityLimiter:
    """The limiter in `var` of this event loop: `default` threads made on first use; `total` resizes it (a
    limiter belongs to one loop, hence a RunVar, not a module global)."""
    try:
        limiter = var.get()
    except LookupError:
        limiter = anyio.CapacityLimiter(total or default)
        var.set(limiter)
    if total is not None:
        limiter.total_tokens = total
    return limiter


def read_threads(total: int | None = None) -> anyio.CapacityLimiter:
    """This event loop's read threads (made on first use; `total` resizes them)."""
    return threads_of_their_own(_READ_THREADS, total, DEFAULT_READ_THREADS)


def in_read_threads(model: Any = None) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """A blocking read-only endpoint run in the read threads instead of the shared worker threads, with its
    answer checked against `model` (the route's response_model) and serialized there too, as FastAPI does it
    (validate_python(from_attributes=True), dump_json(by_alias=True): the same bytes). FastAPI sees the
    endpoint's own signature (functools.wraps) and an async function; were the answer left to it, an async
    endpoint's answer is validated and serialized on the event loop, where a page of 50 providers held every
    other request (and the arrival times that challenges are timed by) for milliseconds. An endpoint that
    returns a Response (`model` None) passes it through."""
    adapter = TypeAdapter(model) if model is not None else None

    def wrap(endpoint: Callable[P, T]) -> Callable[P, T]:
        def answer(*args: P.args, **kwargs: P.kwargs) -> Any:
            value = endpoint(*args, **kwargs)
            if adapter is None or isinstance(value, Response):
                return value
            return Response(adapter.dump_json(adapter.validate_python(value, from_attributes=True), by_alias=True),
                            media_type="application/json")

        @functools.wraps(endpoint)
        async def run(*args: P.args, **kwargs: P.kwargs) -> Any:
            return await anyio.to_thread.run_sync(functools.partial(answer, *args, **kwargs), limiter=read_threads())

        return run  # type: ignore[return-value]

    return wrap


@contextlib.asynccontextmanager
async def writing(db: Database, where: str) -> AsyncIterator[Session]:
    """A write session that is rolled back on any error and always closed."""
    session = db.writer()
    try:
        yield session
    except BaseException:
        session.rollback()
        raise
    else:
        if session.in_transaction():
            LEFT_OPEN.append(where)
            log.error("%s returned with its write transaction open (it holds SQLite's write lock until the "
                      "answer is serialized): build the answer before the commit", where)
    finally:
        session.close()


def rolled_back(session: Session, answer: T) -> T:
    """`answer`, built from the session's rows, after rolling the write transaction back.

    Build first, then roll back: a rollback expires the rows, and reading one afterwards would open a new
    write transaction (BEGIN IMMEDIATE) that holds SQLite's write lock until the session closes.
    """
    session.rollback()
    return answer


async def write_session(request: Request, state: StateDep) -> AsyncIterator[Session]:
    async with writing(state.db, f"{request.method} {request.url.path}") as session:
        yield session


WriteSessionDep = Annotated[Session, Depends(write_session, scope="function")]
