"""Shared dependencies: the app state, sessions, provider signatures, API keys, rate limits."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gateway.db import Database
from gateway.models import ApiKey, Provider, RequestNonce
from gateway.problems import Problem
from gateway.settings import Settings
from verifier import signatures
from verifier.protocol import Verifier

NONCE_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
HEX_ID_RE = re.compile(r"^[0-9a-f]{32}$")


@dataclass
class State:
    settings: Settings
    db: Database
    verifier: Verifier
    signing_key: object
    limiter: RateLimiter
    trust_cache: TrustCache


class TrustCache:
    """Computed trust responses per provider, for a short time (settings.trust_cache_s, default 0.5 s).

    Scores are read far more often than verdicts arrive. The database stays the only truth: a read is at
    most `ttl` seconds behind a verdict judged by another process (this process drops its entry when it
    records one). One computation per provider at a time: concurrent readers of an expired entry wait
    for the same result instead of each recomputing it (64 readers recomputing at once held the GIL for
    a quarter of a second).
    """

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._entries: dict[str, tuple[float, bytes]] = {}
        self._inflight: dict[str, asyncio.Future] = {}

    def get(self, provider_id: str) -> bytes | None:
        hit = self._entries.get(provider_id)
        if hit is None or hit[0] < time.monotonic():
            return None
        return hit[1]

    async def get_or_compute(self, provider_id: str, compute: Callable[[], Awaitable[bytes]]) -> bytes:
        fresh = self.get(provider_id)
        if fresh is not None:
            return fresh
        pending = self._inflight.get(provider_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._inflight[provider_id] = future
        try:
            value = await compute()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody else waited
            raise
        finally:
            self._inflight.pop(provider_id, None)
        if len(self._entries) > 50_000:
            self._entries.clear()
        self._entries[provider_id] = (time.monotonic() + self.ttl, value)
        future.set_result(value)
        return value

    def drop(self, provider_id: str) -> None:
        self._entries.pop(provider_id, None)


class RateLimiter:
    """Token buckets per key (provider id or client IP), in this process: a flood is cut at the door."""

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str, rate: float, burst: float) -> float | None:
        """None if allowed, else the seconds to wait."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (burst, now))
            tokens = min(burst, tokens + (now - last) * rate)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                return None
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / rate
        if len(self._buckets) > 100_000:  # pragma: no cover - bounded memory under a flood of keys
            self._buckets.clear()


async def get_state(request: Request) -> State:  # async: no thread-pool hop for a cheap lookup
    return request.app.state.gp


StateDep = Annotated[State, Depends(get_state)]


def read_session(state: StateDep) -> Iterator[Session]:
    with state.db.reader() as session:
        yield session


ReadSessionDep = Annotated[Session, Depends(read_session)]


def write_session(state: StateDep) -> Iterator[Session]:
    session = state.db.writer()
    try:
        yield session
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


WriteSessionDep = Annotated[Session, Depends(write_session)]


async def limit_ip(request: Request, state: StateDep) -> None:
    ip = request.client.host if request.client else "unknown"
    wait = state.limiter.take(f"ip:{ip}", state.settings.ip_rate_per_s, 2 * state.settings.ip_rate_per_s)
    if wait is not None:
        raise Problem(429, "Too many requests", f"more than {state.settings.ip_rate_per_s:g} requests/s from "
                      "this address", retry_after=max(1, round(wait + 0.5)))


@dataclass
class SignedProvider:
    provider: Provider
    session: Session


async def _body(request: Request) -> bytes:
    return await request.body()


def signed_provider(
    request: Request, state: StateDep, session: WriteSessionDep, body: Annotated[bytes, Depends(_body)],
    x_gpuproof_provider: Annotated[str, Header()], x_gpuproof_timestamp: Annotated[str, Header()],
    x_gpuproof_nonce: Annotated[str, Header()], x_gpuproof_signature: Annotated[str, Header()],
) -> SignedProvider:
    """Authenticate a provider request: Ed25519 over method, path, timestamp, nonce and SHA-256(body).

    The nonce is stored in the request's own transaction: it is kept only if the request succeeds, and a
    replay of a succeeded request is refused.
    """
    if not HEX_ID_RE.match(x_gpuproof_provider):
        raise Problem(401, "Unauthenticated", "X-Gpuproof-Provider: expected 32 lowercase hex characters")
    if not NONCE_RE.match(x_gpuproof_nonce):
        raise Problem(401, "Unauthenticated", "X-Gpuproof-Nonce: expected 16 to 64 characters of [A-Za-z0-9_-]")
    try:
        timestamp = int(x_gpuproof_timestamp)
        signature = bytes.fromhex(x_gpuproof_signature)
    except ValueError:
        raise Problem(401, "Unauthenticated", "X-Gpuproof-Timestamp must be an integer and "
                      "X-Gpuproof-Signature hex") from None
    now = time.time()
    window = state.settings.timestamp_window_s
    if abs(now - timestamp) > window:
        raise Problem(401, "Clock skew", f"request timestamp is {timestamp - now:+.0f} s from the gateway's clock; "
                      f"the window is +-{window:g} s")
    provider = session.get(Provider, x_gpuproof_provider)
    if provider is None:
        raise Problem(401, "Unauthenticated", f"unknown provider {x_gpuproof_provider}")
    path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    message = signatures.request_message(request.method, path, timestamp, x_gpuproof_nonce, body)
    try:
        signatures.verify(provider.public_key, message, signature)
    except signatures.SignatureError as exc:
        raise Problem(401, "Bad signature", f"X-Gpuproof-Signature: {exc}") from None
    wait = state.limiter.take(f"provider:{provider.id}", state.settings.provider_rate_per_s,
                              2 * state.settings.provider_rate_per_s)
    if wait is not None:
        raise Problem(429, "Too many requests", f"more than {state.settings.provider_rate_per_s:g} requests/s "
                      "from this provider", retry_after=max(1, round(wait + 0.5)))
    exists = session.get(RequestNonce, (provider.id, x_gpuproof_nonce))
    if exists is not None:
        raise Problem(409, "Replayed request", f"nonce {x_gpuproof_nonce} was already used by this provider")
    session.add(RequestNonce(provider_id=provider.id, nonce=x_gpuproof_nonce, seen_at=now))
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise Problem(409, "Replayed request", f"nonce {x_gpuproof_nonce} was already used") from None
    return SignedProvider(provider, session)


SignedProviderDep = Annotated[SignedProvider, Depends(signed_provider)]


def hash_api_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def api_key(scope: str):  # noqa: ANN201
    """A dependency requiring a marketplace API key (Authorization: Bearer gpk_<id>_<secret>) with `scope`."""

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
        if scope not in key.scopes.split(","):
            raise Problem(403, "Forbidden", f"API key {key.id} lacks the scope {scope!r}")
        return key

    return check
