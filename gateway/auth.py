"""Who is asking: a provider's Ed25519-signed request (its nonce claimed in the endpoint's write transaction)
and a marketplace's API key with its scopes (docs/gateway.md, "Authentication")."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Annotated

import anyio
import anyio.to_thread
from fastapi import Depends, Header, Request
from gpuproof.gateway import API_KEY_SCOPES
from gpuproof.gateway.models import ApiKey, Provider, RequestNonce
from gpuproof.gateway.problems import Problem
from gpuproof.gateway.sessions import ReadSessionDep, writing
from gpuproof.gateway.state import State, StateDep
from gpuproof.verifier import signatures
from gpuproof.verifier.ids import ID_BYTES, is_hex
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

NONCE_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
wall_clock = time.time  # the clock signed timestamps are checked against (tests move it)


@dataclass(frozen=True)
class DeclaredBody:
    """An upload's SHA-256 (hex) and length as its signed headers declare them."""

    sha256: str
    size: int


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


VERSION_HEADER_DOC = ("the request signature's version: 2 (docs/gateway.md, \"Authentication\"); a request "
                      "without it is refused (401) as signed by an agent older than version 2")
TIMESTAMP_RE = re.compile(r"^(0|[1-9][0-9]{0,15})$")


def signed_target(request: Request) -> str:
    """The request target as the client sent it (signatures.request_target): the raw path bytes of the
    request line (ASGI `raw_path`; never the decoded path) and the raw query string, untouched."""
    raw = request.scope.get("raw_path")
    path = raw.decode("latin-1") if raw is not None else request.scope["path"]
    path = path.split("?", 1)[0]  # some servers (httpx's ASGI transport) put the query in raw_path too
    return signatures.request_target(path, request.scope.get("query_string", b"").decode("latin-1"))


def check_signature_headers(request: Request, state: State, timestamp_text: str | None, nonce: str | None,
                            signature_hex: str | None) -> tuple[int, bytes, float]:
    """The checks every signed request shares, before any database read: the signature version (a request
    from an agent older than version 2 is refused with the reason), the timestamp (within the window of
    the gateway's clock), the nonce's form and the signature's encoding. Returns (timestamp, signature, now)."""
    if timestamp_text is None or nonce is None or signature_hex is None:
        raise Problem(401, "Unauthenticated", "a signed request carries X-Gpuproof-Timestamp, X-Gpuproof-Nonce "
                      "and X-Gpuproof-Signature")
    version = request.headers.get("X-Gpuproof-Signature-Version")
    if version != signatures.SIGNATURE_VERSION:
        got = "none (a version 1 signature)" if version is None else repr(version[:20])
        raise Problem(401, "Signature version not accepted",
                      f"X-Gpuproof-Signature-Version: this gateway checks version {signatures.SIGNATURE_VERSION} "
                      f"only (gpuproof-request/2: the exact request target and body bytes, audience "
                      f"{state.audience!r}; docs/gateway.md, \"Authentication\"), got {got}: upgrade the "
                      "agent or client")
    if not NONCE_RE.match(nonce):
        raise Problem(401, "Unauthenticated", "X-Gpuproof-Nonce: expected 16 to 64 characters of [A-Za-z0-9_-]")
    if not TIMESTAMP_RE.match(timestamp_text):
        raise Problem(401, "Unauthenticated", "X-Gpuproof-Timestamp: expected unix seconds in decimal digits, "
                      "no sign or leading zero")
    try:
        signature = bytes.fromhex(signature_hex)
    except ValueError:
        raise Problem(401, "Unauthenticated", "X-Gpuproof-Signature: expected hex") from None
    timestamp, now = int(timestamp_text), wall_clock()
    window = state.settings.timestamp_window_s
    if abs(now - timestamp) > window:
        raise Problem(401, "Clock skew", f"request timestamp is {timestamp - now:+.0f} s from the gateway's clock; "
                      f"the window is +-{window:g} s")
    return timestamp, signature, now


def verify_request(request: Request, state: State, public_key: bytes, timestamp: int, nonce: str,
                   signature: bytes, body_sha256: str, length: int | None = None) -> None:
    """Raise 401 unless `signature` is `public_key`'s over this request's version 2 message (an upload's,
    with `length`); the detail names the audience a signature must carry."""
    target = signed_target(request)
    message = (signatures.request_message_for_digest(request.method, target, state.audience, timestamp, nonce,
                                                     body_sha256)
               if length is None else
               signatures.upload_message(request.method, target, state.audience, timestamp, nonce, body_sha256,
                                         length))
    try:
        signatures.verify(public_key, message, signature)
    except signatures.SignatureError as exc:
        raise Problem(401, "Bad signature", f"X-Gpuproof-Signature: {exc} (signed over {request.method} "
                      f"{target!r} for audience {state.audience!r}?)") from None


def _authenticate(request: Request, state: State, body_sha256: str, provider_id: str | None,
                  timestamp_text: str | None, nonce: str | None, signature_hex: str | None,
                  length: int | None = None) -> tuple[Provider, float, str]:
    """The checks of signed_provider (run in a worker thread: database reads and an Ed25519 verify);
    with `length`, of signed_upload (the signature covers the declared SHA-256 and length)."""
    timestamp, signature, now = check_signature_headers(request, state, timestamp_text, nonce, signature_hex)
    assert nonce is not None  # checked above
    if provider_id is None or not is_hex(provider_id, ID_BYTES):
        raise Problem(401, "Unauthenticated", "X-Gpuproof-Provider: expected 32 lowercase hex characters")
    with state.db.reader() as reader:
        provider = reader.get(Provider, provider_id)
        replayed = provider is not None and reader.get(RequestNonce, (provider.id, nonce)) is not None
    if provider is None:
        raise Problem(401, "Unauthenticated", f"unknown provider {provider_id}")
    verify_request(request, state, provider.public_key, timestamp, nonce, signature, body_sha256, length)
    if replayed:
        raise Problem(409, "Replayed request", f"nonce {nonce} was already used by this provider")
    wait = state.limiter.take(f"provider:{provider.id}", state.settings.provider_rate_per_s,
                              2 * state.settings.provider_rate_per_s)
    if wait is not None:
        raise Problem(429, "Too many requests", f"more than {state.settings.provider_rate_per_s:g} requests/s "
                      "from this provider", retry_after=max(1, round(wait + 0.5)))
    return provider, now, nonce


@contextlib.asynccontextmanager
async def signed_request(request: Request, state: State, body_sha256: Callable[[], str], provider_id: str | None,
                         timestamp: str | None, nonce: str | None, signature: str | None,
                         length: int | None = None) -> AsyncIterator[SignedProvider]:
    provider, now, claimed = await anyio.to_thread.run_sync(
        lambda: _authenticate(request, state, body_sha256(), provider_id, timestamp, nonce, signature, length))
    async with writing(state.db, f"{request.method} {request.url.path}") as session:
        yield SignedProvider(provider, session, claimed, now)


async def signed_provider(
    request: Request, state: StateDep, body: Annotated[bytes, Depends(raw_body)],
    x_gpuproof_provider: Annotated[str, Header()], x_gpuproof_timestamp: Annotated[str, Header()],
    x_gpuproof_nonce: Annotated[str, Header()], x_gpuproof_signature: Annotated[str, Header()],
    x_gpuproof_signature_version: Annotated[str | None, Header(description=VERSION_HEADER_DOC)] = None,
) -> AsyncIterator[SignedProvider]:
    """Authenticate a provider request: Ed25519 (version 2) over method, the exact request target, the
    gateway's audience, timestamp, nonce and SHA-256 of the raw body (signatures.request_message).

    The checks read only (a read session, no lock); a nonce already stored is refused at once, before any
    expensive work, and the endpoint stores the new one with its own writes, in the write session given
    here (closed on the event loop once the endpoint's answer is serialized; see LEFT_OPEN above).
    """
    async with signed_request(request, state, lambda: hashlib.sha256(body).hexdigest(), x_gpuproof_provider,
                       x_gpuproof_timestamp, x_gpuproof_nonce, x_gpuproof_signature) as signed:
        yield signed


SignedProviderDep = Annotated[SignedProvider, Depends(signed_provider, scope="function")]


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
