"""RFC 9457 problem details: every error the gateway returns, validation errors included."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from gpuproof.gateway import metrics
from gpuproof.kernels.errors import GpuproofError, InvalidParameter
from gpuproof.verifier import lifecycle
from pydantic import BaseModel
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM = "application/problem+json"
# Retry-After of a 503 when the database cannot be reached: a replica cut off from PostgreSQL, a failover
# in progress, a pool with no free connection. Clients (the agent's tenacity loop) back off and retry,
# possibly on another replica, with the same content.
DATABASE_RETRY_AFTER_S = 2
log = logging.getLogger("gpuproof.gateway")


class ProblemDetails(BaseModel):
    """RFC 9457 problem details, as every error response carries them."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"description": text, "model": ProblemDetails,
             "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}}}
    for status, text in [(400, "Rejected"), (401, "Unauthenticated or bad signature"), (403, "Forbidden"),
                         (404, "Not found"), (409, "Conflict with the stored state (replay, retry with other "
                                                   "content, deadline passed)"),
                         (408, "Request body too slow"), (413, "Body too large"), (422, "Invalid request"),
                         (429, "Too many requests"),
                         (500, "Internal error"), (503, "Not ready")]
}


# The one table from the protocol's refusals (verifier/lifecycle.py) to their status and title: a handler
# raises the rule's typed error, never an HTTP error of its own for a protocol decision. A subclass without
# an entry of its own takes its nearest base's.
LIFECYCLE_PROBLEMS: dict[type[lifecycle.LifecycleError], tuple[int, str]] = {
    lifecycle.DeadlinePassed: (409, "Deadline passed"),
    lifecycle.AlreadyJudged: (409, "Already judged"),
    lifecycle.AlreadyCommitted: (409, "Already committed"),
    lifecycle.NotCommitted: (409, "Not committed"),
    lifecycle.WrongState: (409, "Wrong state"),
    lifecycle.AlreadyEchoed: (409, "Already echoed"),
    lifecycle.ProbeExpired: (409, "Probe expired"),
    lifecycle.AlreadyUploaded: (409, "Already uploaded"),
    lifecycle.AlreadyOpened: (409, "Already opened"),
    lifecycle.NotReady: (409, "Not ready"),
    lifecycle.RunClosed: (409, "Run closed"),
    lifecycle.TooManyCommitments: (409, "Too many commitments"),
    lifecycle.TooFewCommitments: (409, "Too few commitments"),
    lifecycle.LifecycleError: (409, "Conflict"),
}


def lifecycle_problem(exc: lifecycle.LifecycleError) -> tuple[int, str]:
    """The status and title of a lifecycle refusal (LIFECYCLE_PROBLEMS, by the nearest class listed)."""
    for cls in type(exc).__mro__:
        if cls in LIFECYCLE_PROBLEMS:
            return LIFECYCLE_PROBLEMS[cls]
    raise AssertionError(f"{type(exc).__name__} is no LifecycleError")  # unreachable: the base is listed


class Problem(Exception):
    """An error with an HTTP status, a short title, a precise detail and an optional Retry-After."""

    def __init__(self, status: int, title: str, detail: str, *, retry_after: int | None = None,
                 **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail, self.retry_after, self.extra = status, title, detail, retry_after, extra


def problem_response(status: int, title: str, detail: str, instance: str = "", retry_after: int | None = None,
                     **extra: Any) -> JSONResponse:
    body = {"type": f"https://gpuproof.dev/problems/{title.lower().replace(' ', '-')}", "title": title,
            "status": status, "detail": detail, **({"instance": instance} if instance else {}), **extra}
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc.status, exc.title, exc.detail, request.url.path, exc.retry_after, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        detail = f"{where}: {first.get('msg', 'invalid')}" if where else str(first.get("msg", "invalid request"))
        return problem_response(422, "Invalid request", detail, request.url.path,
                                errors=[{"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg")}
                                        for e in errors[:20]])

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        title = {400: "Malformed body", 404: "Not found", 405: "Method not allowed",
                 413: "Body too large"}.get(exc.status_code, "Error")
        detail = str(exc.detail)
        if exc.status_code == 400 and detail == "There was an error parsing the body":  # FastAPI's, on bad JSON
            detail = "the body is not JSON this gateway can parse: malformed, or nested deeper than the parser allows"
        return problem_response(exc.status_code, title, detail, request.url.path)

    @app.exception_handler(lifecycle.LifecycleError)
    async def _lifecycle(request: Request, exc: lifecycle.LifecycleError) -> JSONResponse:
        status, title = lifecycle_problem(exc)
        return problem_response(status, title, exc.detail, request.url.path)

    @app.exception_handler(InvalidParameter)
    async def _invalid(request: Request, exc: InvalidParameter) -> JSONResponse:
        return problem_response(422, "Invalid request", str(exc), request.url.path)

    @app.exception_handler(GpuproofError)
    async def _gpuproof(request: Request, exc: GpuproofError) -> JSONResponse:
        return problem_response(400, "Rejected", str(exc), request.url.path)

    @app.exception_handler(sa_exc.DBAPIError)
    async def _database(request: Request, exc: sa_exc.DBAPIError) -> JSONResponse:
        if not database_unavailable(exc):
            return await _unexpected(request, exc)
        return _unavailable(request, exc)

    @app.exception_handler(sa_exc.TimeoutError)
    async def _pool(request: Request, exc: sa_exc.TimeoutError) -> JSONResponse:
        return _unavailable(request, exc)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        return problem_response(500, "Internal error", f"unexpected {type(exc).__name__}; the request was not "
                                "applied", request.url.path)


def database_unavailable(exc: sa_exc.DBAPIError) -> bool:
    """The database could not be reached or dropped the connection (OperationalError: refused, timed out,
    reset, server shutting down; or a connection SQLAlchemy had to invalidate), as opposed to a statement
    it refused (an integrity error, a bug: those stay 500)."""
    return isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError) or bool(exc.connection_invalidated)


def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    """503 + Retry-After: nothing was applied (the transaction never committed), so the same request may
    be sent again, here or to another replica."""
    metrics.DATABASE_UNAVAILABLE.inc()
    cause = getattr(exc, "orig", None) or exc
    log.warning("database unavailable on %s %s: %s: %s", request.method, request.url.path, type(cause).__name__,
                (str(cause).strip().splitlines() or [""])[0][:200])
    return problem_response(503, "Database unavailable", f"the database could not be reached "
                            f"({type(cause).__name__}); the request was not applied: retry", request.url.path,
                            retry_after=DATABASE_RETRY_AFTER_S)
