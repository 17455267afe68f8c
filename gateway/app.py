"""The verifier gateway: `create_app(settings)` builds the FastAPI application.

gateway/ adapts verifier/ to HTTP and storage and holds no protocol logic of its own. Every request
handler that touches the database is a plain function, so FastAPI runs it in its thread pool: a
verification in progress never blocks the event loop, and score reads stay fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import os
import re
import sys
import time
from collections.abc import Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import NamedTuple

import anyio
from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from gpuproof.gateway import blobs, dashboard, maintenance, metrics, migrate, pages, problems, sessions, webhooks
from gpuproof.gateway.db import Database
from gpuproof.gateway.limits import Limiter, RateLimiter, RedisRateLimiter, ip_key, ip_limited_off_loop, too_many_from
from gpuproof.gateway.routers import challenges, health, jobs, log, providers, training, trust, validators
from gpuproof.gateway.routers import webhooks as webhook_routes
from gpuproof.gateway.routers.trust import trust_answer
from gpuproof.gateway.settings import Settings
from gpuproof.gateway.state import PAGES_KEPT, State
from gpuproof.gateway.translog import LogCache
from gpuproof.gateway.trust_cache import HeldEvidence, TrustCache
from gpuproof.gateway.verify_pool import VerifyPool
from gpuproof.kernels.errors import InvalidParameter
from gpuproof.verifier import signatures
from gpuproof.verifier.ids import ID_BYTES, hex_digits
from gpuproof.verifier.profiles import Profile, load_profiles_with
from gpuproof.verifier.protocol import Verifier, VerifierConfig
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def load_signing_key(path: Path):  # noqa: ANN201
    """The gateway's Ed25519 key: read from `path`, or made there on first start (mode 0600)."""
    if not path.exists():
        # Several processes may start at once: write a private temporary file, then link it into place
        # atomically; whoever links first wins and everyone reads that one key.
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(signatures.private_key_bytes(signatures.new_private_key()).hex())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    try:
        return signatures.private_key_from_bytes(bytes.fromhex(path.read_text().strip()))
    except (ValueError, signatures.SignatureError):
        raise InvalidParameter("signing_key_path", f"{path} does not hold a 64-hex-character Ed25519 key") from None


def gateway_profiles(settings: Settings) -> Mapping[str, Profile] | None:
    """The profiles the gateway judges by: the packaged ones (None) or, with GPUPROOF_PROFILES_FILE, those
    and the operator's file's (InvalidParameter naming the file and entry when one is not valid)."""
    return load_profiles_with(settings.profiles_file) if settings.profiles_file else None


DOCS_ASSETS = "/docs-assets"  # where the API docs' JavaScript and CSS are served (create_app)
UPLOAD_PATH = re.compile(rf"^/v1/audits/{hex_digits(ID_BYTES)}/state$")


class BodyLimit:
    """Refuse bodies over the limit (413) or too slow to arrive (408), as problem+json.

    The size is checked by Content-Length and again while streaming; the whole body must arrive within
    `timeout` seconds of the request's start, so a slow-loris client holds one connection for at most
    that long (and never blocks anyone else: the server is asynchronous).
    """

    def __init__(self, app: ASGIApp, limit: int, timeout: float,
                 uploads: tuple[re.Pattern, int] | None = None) -> None:
        self.app, self.default_limit, self.timeout, self.uploads = app, limit, timeout, uploads

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})["started_at"] = time.time()  # for admission control (challenges.py)
        limit = self.default_limit
        if self.uploads is not None and scope["method"] == "PUT" and self.uploads[0].match(scope.get("path", "")):
            limit = self.uploads[1]  # checkpoint uploads (settings.max_upload_bytes)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await self._reject(scope, receive, send, 413, "Body too large",
                               f"request bodies are limited to {limit} bytes")
            return
        seen = 0
        deadline = time.monotonic() + self.timeout
        started = [False]

        async def limited() -> Message:
            nonlocal seen
            try:
                message = await asyncio.wait_for(receive(), timeout=max(0.001, deadline - time.monotonic()))
            except TimeoutError:
                raise _TooSlow() from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge()
                if not message.get("more_body", False):  # when the body had fully arrived: commitments
                    scope.setdefault("state", {})["body_at"] = time.time()  # are timed by this, not by
            return message  # when a worker thread got to them (tests/gateway/test_api.py)

        async def watched_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                started[0] = True
            await send(message)

        try:
            await self.app(scope, limited, watched_send)
        except _TooLarge:
            if not started[0]:
                await self._reject(scope, receive, send, 413, "Body too large",
                                   f"request bodies are limited to {limit} bytes")
        except _TooSlow:
            if not started[0]:
                await self._reject(scope, receive, send, 408, "Request timeout",
                                   f"the request body did not arrive within {self.timeout:g} s")

    @staticmethod
    async def _reject(scope: Scope, receive: Receive, send: Send, status: int, title: str, detail: str) -> None:
        response = problems.problem_response(status, title, detail, scope.get("path", ""))
        await response(scope, receive, send)


class _TooSlow(BaseException):  # noqa: N818 - BaseException so that body parsing cannot swallow it as a 400
    pass


class _TooLarge(BaseException):  # noqa: N818 - as _TooSlow
    pass


def make_limiter(settings: Settings) -> Limiter:
    """Rate limits in this process, or shared by every replica through Redis when GPUPROOF_REDIS_URL is set."""
    if settings.redis_url:
        return RedisRateLimiter(settings.redis_url, settings.redis_prefix)
    return RateLimiter()


def create_app(settings: Settings | None = None, *, run_migrations: bool = True) -> FastAPI:
    settings = settings or Settings()
    profiles = gateway_profiles(settings)  # a bad profiles file stops the start before anything is touched
    db = Database(settings.sqlalchemy_url())
    if run_migrations:
        migrate.upgrade(db.url)

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202
        # The long-lived objects made at start-up (modules, SciPy, SQLAlchemy metadata) are moved out of
        # the collector's reach: full collections over them paused every request otherwise
        # (docs/performance.md, "Gateway under load").
        gc.collect()
        gc.freeze()
        # Blocking work (verification, database writes) runs in at most `worker_threads` threads (3): each
        # runnable thread takes turns at the GIL with the event loop, so fewer threads keep reads fast
        # under load; SQLite serialises writes anyway (docs/performance.md, "Gateway under load", compares
        # 8 threads with 3).
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.worker_threads
        sessions.read_threads(settings.read_threads)
        sys.setswitchinterval(0.001)
        sweeping = (asyncio.create_task(maintenance.run(app.state.gp), name="gpuproof maintenance")
                    if settings.maintenance_interval_s > 0 else None)
        delivering = (asyncio.create_task(webhooks.run(app.state.gp), name="gpuproof webhooks")
                      if settings.webhook_poll_s > 0 else None)
        yield
        for task in (sweeping, delivering):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        db.dispose()

    # /docs (Swagger UI) and /redoc with their scripts and styles served by the gateway itself, from the
    # fastapi-offline package (DOCS_ASSETS): FastAPI's own pages load them from a CDN and are blank offline.
    app = FastAPIOffline(title="gpuproof gateway", version="1", lifespan=lifespan, static_url=DOCS_ASSETS,
                         description="Exact GPU challenges, trust scores, settlement and a transparency log.")
    verifier = Verifier(VerifierConfig(spot_checks=settings.spot_checks, spec=settings.challenge_spec),
                        profiles=profiles)
    signing_key = load_signing_key(settings.key_path())
    app.state.gp = State(settings=settings, db=db, verifier=verifier, signing_key=signing_key,
                         limiter=make_limiter(settings),
                         trust_cache=TrustCache(settings.trust_cache_s, held=HeldEvidence()),
                         blobs=blobs.open_store(settings),
                         verify_pool=VerifyPool(settings.verify_threads,
                                                min(settings.verify_threads_new, settings.verify_threads)),
                         audience=settings.audience or signatures.public_key_bytes(signing_key).hex(),
                         totals=pages.Totals(settings.list_totals_s), log_cache=LogCache(settings.log_cache_hashes),
                         page_cache=TrustCache(settings.page_cache_s, max_entries=PAGES_KEPT),
                         front_cache=TrustCache(settings.page_cache_s, max_entries=PAGES_KEPT))
    problems.install(app)
    for router in (providers.router, trust.router, challenges.router, jobs.router, training.router, log.router,
                   health.router, validators.router):
        app.include_router(router, responses=problems.ERROR_RESPONSES)
    app.include_router(webhook_routes.router, responses=problems.ERROR_RESPONSES)
    app.include_router(dashboard.router)

    app.add_middleware(RequestTiming)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes, timeout=settings.body_timeout_s,
                       uploads=(UPLOAD_PATH, settings.max_upload_bytes))
    return app


class TrustFastPath:
    """GET /v1/providers/{id}/trust answered from the trust cache before the application sees the request:
    what uvicorn serves (gateway/asgi.py: `TrustFastPath.in_front_of(create_app())`).

    Score reads are most of the traffic and nearly all of them cache hits; for those this skips FastAPI
    entirely (its middleware stack, routing, dependency injection). It answers exactly as the route does:
    the cached bytes with the same headers, or the same 429 with Retry-After from the same per-address
    limit (gateway.limits.ip_limited_off_loop); an expired entry is served and refreshed as the route serves it
    (TrustCache.cached); and each answer is counted in gpuproof_request_seconds under the route's
    template. Anything else (another path or method, a query string, a provider with no entry in the
    cache) goes on to `app`, which answers as always: a miss computes the entry there, an unknown provider
    gets its 404 and a malformed id its 422. `state` is the gateway's (app.state.gp).
    """

    PREFIX, SUFFIX = "/v1/providers/", "/trust"
    PATH_CHARS = len(PREFIX) + 2 * ID_BYTES + len(SUFFIX)
    ROUTE = "/v1/providers/{provider_id}/trust"
    REPLIES_KEPT = 4096  # the messages of this many answers are kept made (the hot providers' ones)

    def __init__(self, app: ASGIApp, state: State) -> None:
        self.app, self.state = app, state
        self._compute = functools.partial(trust_answer, state)
        self._answered = metrics.Tally.of(route=self.ROUTE, method="GET", status="200").observe
        self._limited = metrics.Tally.of(route=self.ROUTE, method="GET", status="429").observe
        self._replies: dict[str, Reply] = {}  # by path

    @classmethod
    def in_front_of(cls, app: FastAPI) -> TrustFastPath:
        """The gateway application `app` (create_app) behind the fast path."""
        return cls(app, app.state.gp)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Every test here runs on every request the gateway serves, so each is as cheap as it can be made: a
        # trust path answered before is found by a dict lookup (its reply, made once per cached answer).
        if scope["type"] != "http" or scope["method"] != "GET" or scope.get("query_string") \
                or scope.get("root_path") or _has_body(scope["headers"]):
            await self.app(scope, receive, send)  # (a GET with a body too: the app's body limit answers it)
            return
        started = time.perf_counter()
        state, path = self.state, scope["path"]
        reply = self._replies.get(path)
        provider_id = reply.provider_id if reply is not None else self._provider_of(path)
        body, stale = (None, False) if provider_id is None else state.trust_cache.peek(provider_id)
        if body is None or provider_id is None:
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        ip = client[0] if client else "unknown"
        try:
            if state.limiter.blocking:
                problem = await ip_limited_off_loop(state, ip)
            else:  # this process's buckets, inline: no coroutine per read
                rate = state.settings.ip_rate_per_s
                wait = state.limiter.take(ip_key(ip), rate, 2 * rate)
                problem = None if wait is None else too_many_from(state, wait)
        except Exception:  # a shared limiter that failed (Redis away): the route answers it, and counts it
            await self.app(scope, receive, send)
            return
        if problem is None:
            if stale:  # refreshed for a reader the limit let through only: a refused one costs nothing
                state.trust_cache.refresh(provider_id, self._compute)
            if reply is None or reply.body is not body:
                reply = self._reply(path, provider_id, body)
            await send(reply.start)
            await send(reply.message)
            self._answered(time.perf_counter() - started)
        else:
            response = problems.problem_response(problem.status, problem.title, problem.detail, path,
                                                 problem.retry_after)
            await response(scope, receive, send)
            self._limited(time.perf_counter() - started)

    @classmethod
    def _provider_of(cls, path: str) -> str | None:
        """The id in a trust path, unparsed: only the route puts entries in the cache, under ids it validated,
        so an id with an entry is a valid one, and any other goes on to the route (its 404 or 422)."""
        if len(path) != cls.PATH_CHARS or not path.startswith(cls.PREFIX) or not path.endswith(cls.SUFFIX):
            return None
        return path[len(cls.PREFIX):-len(cls.SUFFIX)]

    def _reply(self, path: str, provider_id: str, body: bytes) -> Reply:
        """The messages answering `body`, made once per cached answer (a bare ASGI app keeps its own too:
        nothing between uvicorn and the fast path changes a message it is sent)."""
        if len(self._replies) >= self.REPLIES_KEPT:
            self._replies.clear()
        reply = self._replies[path] = Reply(
            provider_id, body,
            {"type": "http.response.start", "status": 200,  # Starlette Response's headers
             # a tuple: nothing may change a message sent again and again (uvicorn copies the headers)
             "headers": ((b"content-length", b"%d" % len(body)), (b"content-type", b"application/json"))},
            {"type": "http.response.body", "body": body})
        return reply


class Reply(NamedTuple):
    """A cached trust answer's two ASGI messages (TrustFastPath), by the answer they were made for."""

    provider_id: str
    body: bytes
    start: Message
    message: Message


def _has_body(headers: list[tuple[bytes, bytes]]) -> bool:
    # (a loop, not any() over a generator: that costs twice; comparisons, not a set: a length tells most
    # names apart before a byte is read)
    for name, _ in headers:  # noqa: SIM110
        if name == b"content-length" or name == b"transfer-encoding":
            return True
    return False


class RequestTiming:
    """Request latency by route template (pure ASGI: no per-request task or body copy)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except _TooLarge:  # BodyLimit, above, answers these: count them as what the client gets
            status[0] = 413
            raise
        except _TooSlow:
            status[0] = 408
            raise
        finally:
            route = scope.get("route")
            metrics.REQUEST_SECONDS.labels(route=getattr(route, "path", "unmatched"), method=scope["method"],
                                           status=str(status[0])).observe(time.perf_counter() - started)


def openapi_document(data_dir: Path) -> str:
    """The OpenAPI document of an app built on a throw-away SQLite database in `data_dir`, as canonical
    JSON (keys sorted, one-space indent, a final newline): what docs/openapi.json holds."""
    import json

    app = create_app(Settings(data_dir=data_dir, database_url=f"sqlite:///{data_dir / 'openapi.db'}",
                              maintenance_interval_s=0, profiles_file=None))
    return json.dumps(app.openapi(), sort_keys=True, indent=1, ensure_ascii=False) + "\n"
