"""Shared dependencies: the app state, sessions, provider signatures, API keys, rate limits."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Protocol, TypeVar

import anyio
import anyio.to_thread
from fastapi import Depends, Header, Request
from gpuproof.gateway import API_KEY_SCOPES
from gpuproof.gateway.blobs import BlobStore
from gpuproof.gateway.db import Database
from gpuproof.gateway.models import ApiKey, Provider, RequestNonce
from gpuproof.gateway.problems import Problem
from gpuproof.gateway.settings import Settings
from gpuproof.verifier import signatures
from gpuproof.verifier.ids import ID_BYTES, is_hex
from gpuproof.verifier.protocol import Verifier
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

NONCE_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


@dataclass
class State:
    settings: Settings
    db: Database
    verifier: Verifier
    signing_key: object
    limiter: Limiter
    trust_cache: TrustCache
    blobs: BlobStore  # uploaded checkpoint states (gateway/blobs.py: local directory or S3)


class Limiter(Protocol):
    """Token buckets per key: RateLimiter (this process) or gateway.limits.RedisRateLimiter (shared)."""

    def take(self, key: str, rate: float, burst: float) -> float | None: ...


class TrustCache:
    """Computed trust responses per provider, fresh for `ttl` seconds (settings.trust_cache_s, 0.5 s).

    Scores are read far more often than verdicts arrive; the database stays the only truth. An expired
    entry is served while one refresh runs in the background (stale-while-revalidate, never more than
    `max_stale` seconds old), and refreshes run on their own few threads: a burst of writes queued on
    the database lock never makes readers wait. This process drops a provider's entry when it records a
    verdict for it; a verdict judged by another process shows within `ttl` plus a refresh.
    """

    def __init__(self, ttl: float, max_stale: float = 5.0) -> None:
        self.ttl, self.max_stale = ttl, max_stale
        self._entries: dict[str, tuple[float, bytes]] = {}
        self._inflight: dict[str, asyncio.Future] = {}
        self._limiter: anyio.CapacityLimiter | None = None

    async def get_or_compute(self, provider_id: str, compute: Callable[[], bytes]) -> bytes:
        now = time.monotonic()
        hit = self._entries.get(provider_id)
        if hit is not None and hit[0] >= now:
            return hit[1]
        pending = self._inflight.get(provider_id)
        if hit is not None and now - hit[0] <= self.max_stale:
            if pending is None:
                self._start(provider_id, compute)
            return hit[1]
        if pending is None:
            pending = self._start(provider_id, compute)
        return await asyncio.shield(pending)

    def peek(self, provider_id: str) -> bytes | None:
        """A fresh entry, or None (expired entries go through get_or_compute, which refreshes them)."""
        hit = self._entries.get(provider_id)
        return hit[1] if hit is not None and hit[0] >= time.monotonic() else None

    def _start(self, provider_id: str, compute: Callable[[], bytes]) -> asyncio.Future:
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(4)
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._inflight[provider_id] = future

        async def refresh() -> None:
            try:
                value = await anyio.to_thread.run_sync(compute, limiter=self._limiter)
            except BaseException as exc:
                future.set_exception(exc)
                future.exception()  # retrieved: no warning when nobody else waited
            else:
                if len(self._entries) > 50_000:
                    self._entries.clear()
                self._entries[provider_id] = (time.monotonic() + self.ttl, value)
                future.set_result(value)
            finally:
                self._inflight.pop(provider_id, None)

        self._tasks.add(task := asyncio.get_running_loop().create_task(refresh()))
        task.add_done_callback(self._tasks.discard)
        return future

    _tasks: set = set()  # keeps background refreshes referenced until they finish

    def drop(self, provider_id: str) -> None:
        self._entries.pop(provider_id, None)


class RateLimiter:
    """Token buckets per key (provider id or client IP), in this process: a flood is cut at the door.

    `clock` is the time source in seconds (monotonic by default; tests pass a controlled one).
    At most `max_keys` buckets are kept: beyond that the buckets that are full again are forgotten
    (a forgotten key gets a full bucket back, so it gains nothing), then, if all are live, the least
    recently used half (to reset one busy key that way takes max_keys / 2 requests from other keys).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000) -> None:
        self._buckets: dict[str, tuple[float, float, float]] = {}  # tokens, last, full again at
        self._lock = threading.Lock()
        self._clock = clock
        self._max_keys = max_keys

    def take(self, key: str, rate: float, burst: float) -> float | None:
        """None if allowed, else the seconds to wait."""
        now = self._clock()
        with self._lock:
            tokens, last, _ = self._buckets.get(key, (burst, now, now))
            tokens = min(burst, tokens + (now - last) * rate)
            allowed = tokens >= 1
            left = tokens - 1 if allowed else tokens
            self._buckets[key] = (left, now, now + (burst - left) / rate)
            if len(self._buckets) > self._max_keys:
                self._forget(now)
        return None if allowed else (1 - tokens) / rate

    def _forget(self, now: float) -> None:
        """Drop the buckets that are full again by now (those keys lose nothing); if live buckets
        still exceed the bound, the ones touched longest ago go too."""
        for key in [k for k, (_, _, full_at) in self._buckets.items() if full_at <= now]:
            del self._buckets[key]
        if len(self._buckets) > self._max_keys:
            oldest = sorted(self._buckets, key=lambda k: self._buckets[k][1])
            for key in oldest[: len(self._buckets) - self._max_keys // 2]:
                del self._buckets[key]


async def get_state(request: Request) -> State:  # async: no thread-pool hop for a cheap lookup
    return request.app.state.gp


StateDep = Annotated[State, Depends(get_state)]


def queued_s(request: Request) -> float:
    """How long this request waited between arriving and its handler starting (0 if unknown)."""
    started = getattr(request.state, "started_at", None)
    return max(0.0, time.time() - started) if started else 0.0


def arrived_at(request: Request) -> float:
    """When the request's body had fully arrived (gateway.app.BodyLimit), else now."""
    return getattr(request.state, "body_at", None) or time.time()


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
wall_clock = time.time  # the clock signed timestamps are checked against (tests move it)
log = logging.getLogger("gpuproof.gateway")


async def read_session(state: StateDep) -> AsyncIterator[Session]:
    session = state.db.reader()
    try:
        yield session
    finally:
        session.close()


ReadSessionDep = Annotated[Session, Depends(read_session)]


T = TypeVar("T")


@contextlib.asynccontextmanager
async def _writing(db: Database, where: str) -> AsyncIterator[Session]:
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
    async with _writing(state.db, f"{request.method} {request.url.path}") as session:
        yield session


WriteSessionDep = Annotated[Session, Depends(write_session, scope="function")]


async def limit_ip(request: Request, state: StateDep) -> None:
    ip = request.client.host if request.client else "unknown"
    wait = state.limiter.take(f"ip:{ip}", state.settings.ip_rate_per_s, 2 * state.settings.ip_rate_per_s)
    if wait is not None:
        raise Problem(429, "Too many requests", f"more than {state.settings.ip_rate_per_s:g} requests/s from "
                      "this address", retry_after=max(1, round(wait + 0.5)))


@dataclass
class SignedProvider:
    """An authenticated provider request. Its write session has not begun: call `claim_nonce()` first
    thing in the write transaction, so that the database lock is held only for the writes themselves
    (SQLite has one writer at a time) and a rejected request leaves nothing behind."""

    provider: Provider
    session: Session
    nonce: str
    now: float
    declared: DeclaredBody | None = None  # an upload's signed SHA-256 and length (signed_upload)

    def claim_nonce(self) -> None:
        """Store this request's nonce in the write transaction; a replay of a stored one is refused."""
        if self.session.get(RequestNonce, (self.provider.id, self.nonce)) is not None:
            raise Problem(409, "Replayed request", f"nonce {self.nonce} was already used by this provider")
        self.session.add(RequestNonce(provider_id=self.provider.id, nonce=self.nonce, seen_at=self.now))
        try:
            self.session.flush()
        except IntegrityError:
            self.session.rollback()
            raise Problem(409, "Replayed request", f"nonce {self.nonce} was already used") from None


async def raw_body(request: Request) -> bytes:
    return await request.body()


def _authenticate(request: Request, state: State, body_sha256: str, provider_id: str, timestamp_text: str,
                  nonce: str, signature_hex: str, length: int | None = None) -> tuple[Provider, float]:
    """The checks of signed_provider (run in a worker thread: database reads and an Ed25519 verify);
    with `length`, of signed_upload (the signature covers the declared SHA-256 and length)."""
    if not is_hex(provider_id, ID_BYTES):
        raise Problem(401, "Unauthenticated", "X-Gpuproof-Provider: expected 32 lowercase hex characters")
    if not NONCE_RE.match(nonce):
        raise Problem(401, "Unauthenticated", "X-Gpuproof-Nonce: expected 16 to 64 characters of [A-Za-z0-9_-]")
    try:
        timestamp = int(timestamp_text)
        signature = bytes.fromhex(signature_hex)
    except ValueError:
        raise Problem(401, "Unauthenticated", "X-Gpuproof-Timestamp must be an integer and "
                      "X-Gpuproof-Signature hex") from None
    now = wall_clock()
    window = state.settings.timestamp_window_s
    if abs(now - timestamp) > window:
        raise Problem(401, "Clock skew", f"request timestamp is {timestamp - now:+.0f} s from the gateway's clock; "
                      f"the window is +-{window:g} s")
    with state.db.reader() as reader:
        provider = reader.get(Provider, provider_id)
        replayed = provider is not None and reader.get(RequestNonce, (provider.id, nonce)) is not None
    if provider is None:
        raise Problem(401, "Unauthenticated", f"unknown provider {provider_id}")
    path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    message = (signatures.request_message_for_digest(request.method, path, timestamp, nonce, body_sha256)
               if length is None else
               signatures.upload_message(request.method, path, timestamp, nonce, body_sha256, length))
    try:
        signatures.verify(provider.public_key, message, signature)
    except signatures.SignatureError as exc:
        raise Problem(401, "Bad signature", f"X-Gpuproof-Signature: {exc}") from None
    if replayed:
        raise Problem(409, "Replayed request", f"nonce {nonce} was already used by this provider")
    wait = state.limiter.take(f"provider:{provider.id}", state.settings.provider_rate_per_s,
                              2 * state.settings.provider_rate_per_s)
    if wait is not None:
        raise Problem(429, "Too many requests", f"more than {state.settings.provider_rate_per_s:g} requests/s "
                      "from this provider", retry_after=max(1, round(wait + 0.5)))
    return provider, now


@contextlib.asynccontextmanager
async def _signed(request: Request, state: State, body_sha256: Callable[[], str], provider_id: str,
                  timestamp: str, nonce: str, signature: str,
                  length: int | None = None) -> AsyncIterator[SignedProvider]:
    provider, now = await anyio.to_thread.run_sync(
        lambda: _authenticate(request, state, body_sha256(), provider_id, timestamp, nonce, signature, length))
    async with _writing(state.db, f"{request.method} {request.url.path}") as session:
        yield SignedProvider(provider, session, nonce, now)


async def signed_provider(
    request: Request, state: StateDep, body: Annotated[bytes, Depends(raw_body)],
    x_gpuproof_provider: Annotated[str, Header()], x_gpuproof_timestamp: Annotated[str, Header()],
    x_gpuproof_nonce: Annotated[str, Header()], x_gpuproof_signature: Annotated[str, Header()],
) -> AsyncIterator[SignedProvider]:
    """Authenticate a provider request: Ed25519 over method, path, timestamp, nonce and SHA-256(body).

    The checks read only (a read session, no lock); a nonce already stored is refused at once, before any
    expensive work, and the endpoint stores the new one with its own writes, in the write session given
    here (closed on the event loop once the endpoint's answer is serialized; see LEFT_OPEN above).
    """
    async with _signed(request, state, lambda: hashlib.sha256(body).hexdigest(), x_gpuproof_provider,
                       x_gpuproof_timestamp, x_gpuproof_nonce, x_gpuproof_signature) as signed:
        yield signed


SignedProviderDep = Annotated[SignedProvider, Depends(signed_provider, scope="function")]


@dataclass(frozen=True)
class DeclaredBody:
    """An upload's SHA-256 (hex) and length as its signed headers declare them."""

    sha256: str
    size: int


@dataclass(frozen=True)
class Upload:
    """A request body on disk: its temporary file, SHA-256 (hex) and size."""

    path: Path
    sha256: str
    size: int




async def signed_upload(
    request: Request, state: StateDep,
    x_gpuproof_provider: Annotated[str | None, Header()] = None,
    x_gpuproof_timestamp: Annotated[str | None, Header()] = None,
    x_gpuproof_nonce: Annotated[str | None, Header()] = None,
    x_gpuproof_signature: Annotated[str | None, Header()] = None,
    x_gpuproof_content_sha256: Annotated[str | None, Header()] = None,
    content_length: Annotated[str | None, Header()] = None,
) -> AsyncIterator[SignedProvider]:
    """signed_provider for an upload, from its headers alone: the signature covers the SHA-256 and length
    the headers declare (signatures.upload_message), so it is checked before a byte of the body is read
    (issue 18: unsigned uploads used to stream up to GPUPROOF_MAX_UPLOAD_BYTES to disk first). The body
    is then received by `receive_upload`, which holds it to what was signed."""
    headers = (x_gpuproof_provider, x_gpuproof_timestamp, x_gpuproof_nonce, x_gpuproof_signature)
    if any(h is None for h in headers) or x_gpuproof_content_sha256 is None:
        raise Problem(401, "Unauthenticated", "an upload is signed in its headers: X-Gpuproof-Provider, "
                      "X-Gpuproof-Timestamp, X-Gpuproof-Nonce, X-Gpuproof-Signature, X-Gpuproof-Content-Sha256")
    if content_length is None or not content_length.isdigit():
        raise Problem(411, "Length required", "an upload declares its length (Content-Length) and signs it")
    if not is_hex(x_gpuproof_content_sha256, 32):
        raise Problem(401, "Unauthenticated", "X-Gpuproof-Content-Sha256: expected 64 lowercase hex characters")
    declared = DeclaredBody(x_gpuproof_content_sha256, int(content_length))
    assert None not in headers  # for the type checker: checked above
    async with _signed(request, state, lambda: declared.sha256, *headers, length=declared.size) as signed:  # type: ignore[arg-type]
        signed.declared = declared
        yield signed


SignedUploadDep = Annotated[SignedProvider, Depends(signed_upload, scope="function")]


@contextlib.asynccontextmanager
async def receive_upload(request: Request, state: State, declared: DeclaredBody) -> AsyncIterator[Upload]:
    """The body of an authenticated upload streamed to a temporary file in the uploads directory and
    hashed on the way, so a checkpoint upload never sits in the gateway's memory; cut off (400) as soon
    as it passes its declared length, refused (400) if its SHA-256 differs from the declared one. The file
    is deleted when the request ends unless the endpoint moved it into the local blob store (a rename)."""
    incoming = state.blobs.incoming  # local disk, whichever store keeps the blobs
    incoming.mkdir(parents=True, exist_ok=True)
    path = incoming / f"{secrets.token_hex(12)}.part"
    digest, size = hashlib.sha256(), 0
    try:
        with open(path, "wb") as fh:  # 64 KiB chunks: hashing and writing one is tens of microseconds
            async for chunk in request.stream():
                size += len(chunk)
                if size > declared.size:
                    raise Problem(400, "Body longer than signed", f"the body passed its declared length of "
                                  f"{declared.size} bytes")
                digest.update(chunk)
                fh.write(chunk)
        if size != declared.size:
            raise Problem(400, "Body shorter than signed", f"the body has {size} bytes, {declared.size} declared")
        if not hmac.compare_digest(digest.hexdigest(), declared.sha256):
            raise Problem(400, "Body differs from signed", "the body's SHA-256 differs from "
                          "X-Gpuproof-Content-Sha256")
        yield Upload(path, declared.sha256, size)
    finally:
        path.unlink(missing_ok=True)


def hash_api_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def api_key(scope: str, *others: str):  # noqa: ANN201
    """A dependency requiring a marketplace API key (Authorization: Bearer gpk_<id>_<secret>) with `scope`
    (or any of `others`). The key's tenant is all it may see (gateway/tenancy.py)."""
    for s in (scope, *others):
        if s not in API_KEY_SCOPES:  # a typo in a router would otherwise lock everyone out, silently
            raise ValueError(f"unknown API key scope {s!r}; the scopes are {', '.join(API_KEY_SCOPES)}")

    def check(session: ReadSessionDep, authorization: Annotated[str | None, Header()] = None) -> ApiKey:
        if not authorization or not authorization.startswith("Bearer "):
            raise Problem(401, "Unauthenticated", "Authorization: expected 'Bearer gpk_<id>_<secret>'")
        token = authorization[len("Bearer "):].strip()
        parts = token.split("_")
        if len(parts) != 3 or parts[0] != "gpk":
            raise Problem(401, "Unauthenticated", "API key: expected the form gpk_<id>_<secret>")
        key = session.execute(select(ApiKey).where(ApiKey.id == parts[1])).scalar_one_or_none()
        if key is None or not hmac.compare_digest(key.key_hash, hash_api_secret(parts[2])):
            raise Problem(401, "Unauthenticated", "API key is not known")
        if not {scope, *others} & set(key.scopes.split(",")):
            wanted = " or ".join(repr(s) for s in (scope, *others))
            raise Problem(403, "Forbidden", f"API key {key.id} lacks the scope {wanted}")
        return key

    return check
