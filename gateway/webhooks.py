"""Webhooks for marketplaces (issue 19; docs/api.md, "Receive webhooks"): a transactional outbox and the
loop that delivers it.

Events are stored as deliveries (one row per event and endpoint) by one-line calls in the transactions that
make them (`on_verdict`, `on_segment_verdict`, `on_settlement`, `check_trust`): a delivery exists exactly
when its state change was committed, and survives a restart. Every gateway process runs `run`, which
claims due deliveries (FOR UPDATE SKIP LOCKED on PostgreSQL, so replicas never take the same row; SQLite
has one writer at a time), sends them signed per Standard Webhooks (verifier/webhooks.py) without holding
a transaction, and records each attempt: 2xx is delivered; anything else is retried with exponential
backoff and jitter until `webhook_max_attempts`, then failed. A claimed row is leased for the attempt's
timeout plus LEASE_SLACK_S: if its process dies mid-send, another sends it after that (at least once; the
`webhook-id` stays the same, so a receiver drops the repeat).

Who hears what: a tenant's endpoints get `settlement` for the tenant's jobs, and `verdict` and `trust` for
every provider that one of the tenant's jobs not yet final (released or refunded) is bound to.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

import anyio.to_thread
import httpcore
import httpx
from gpuproof.gateway import metrics, tenancy
from gpuproof.gateway.db import Database, locked
from gpuproof.gateway.models import Challenge as ChallengeRow
from gpuproof.gateway.models import (
    Job,
    ProviderTrustStatus,
    SegmentAudit,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from gpuproof.gateway.settings import Settings
from gpuproof.gateway.state import State
from gpuproof.verifier import webhooks
from gpuproof.verifier.trust import TrustScore, score
from sqlalchemy import CursorResult, delete, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

BATCH = 20  # deliveries claimed and sent at once by one process
LEASE_SLACK_S = 30.0
USER_AGENT = "gpuproof-webhooks/1"
log = logging.getLogger("gpuproof.gateway")


# --- events: called in the transaction of the state change -------------------------------------------------


def _open_jobs(session: Session, provider_id: str) -> dict[str, list[str]]:
    """The open (not final) jobs bound to a provider, by tenant."""
    rows = session.execute(select(Job.tenant, Job.id).where(Job.provider_id == provider_id, Job.final.is_(False),
                                                            Job.tenant.is_not(None))).all()
    out: dict[str, list[str]] = {}
    for tenant, job_id in rows:
        if tenant is not None:  # the query excludes them; for the type checker
            out.setdefault(tenant, []).append(job_id)
    return out


def _endpoints(session: Session, tenants: Iterable[str], event_type: str) -> list[WebhookEndpoint]:
    tenants = sorted(set(tenants))
    if not tenants:
        return []
    rows = session.execute(select(WebhookEndpoint).where(WebhookEndpoint.tenant.in_(tenants))
                           .order_by(WebhookEndpoint.id)).scalars()
    return [e for e in rows if event_type in e.events]


def enqueue(session: Session, endpoint: WebhookEndpoint, event: webhooks.Event) -> WebhookDelivery:
    """Store one delivery of `event` to `endpoint` in the caller's transaction, due at once."""
    delivery = WebhookDelivery(id=secrets.token_hex(16), endpoint_id=endpoint.id, event_type=event.type,
                               body=event.body().decode(), created_at=event.at, state="pending", attempts=0,
                               retries=0, next_attempt_at=event.at)
    session.add(delivery)
    return delivery


def on_verdict(session: Session, row: ChallengeRow, now: float) -> None:
    """A challenge was judged (service.record_verdict): `verdict` to the tenants with open jobs on its
    provider (the caller then calls service.evidence_changed, which sends `trust`)."""
    jobs = _open_jobs(session, row.provider_id)
    for endpoint in _endpoints(session, jobs, webhooks.VERDICT):
        enqueue(session, endpoint, webhooks.verdict_event(row.provider_id, "challenge", row.id, row.verdict,
                                                          row.outcome or "", jobs[endpoint.tenant], now))


def on_segment_verdict(session: Session, audit: SegmentAudit, now: float) -> None:
    """A training segment was judged (audits.judge): as `on_verdict`, with subject "segment"."""
    jobs = _open_jobs(session, audit.provider_id)
    for endpoint in _endpoints(session, jobs, webhooks.VERDICT):
        enqueue(session, endpoint, webhooks.verdict_event(audit.provider_id, "segment", audit.id, audit.verdict,
                                                          audit.outcome or "", jobs[endpoint.tenant], now))


def on_settlement(session: Session, job: Job, now: float) -> None:
    """A job's settlement decision changed (jobs.settle_job): `settlement` to its tenant's endpoints."""
    if job.tenant is None:
        return
    for endpoint in _endpoints(session, [job.tenant], webhooks.SETTLEMENT):
        enqueue(session, endpoint, webhooks.settlement_event(job.id, job.provider_id, job.decision or "",
                                                             job.reasons or [], job.final,
                                                             tenancy.renter_commitment(job), now))


def check_trust(session: Session, provider_id: str, now: float, trust: TrustScore,
                jobs: dict[str, list[str]] | None = None) -> None:
    """After new evidence on a provider: when some endpoint wants `trust` for it, compute its trust status
    and, when it differs from the one last reported (at first: the status of a provider without evidence),
    store it and send `trust`. Call it after the transaction's log append: the log head's row lock orders
    these checks, so two transactions never report the same change. A status that changes with time alone
    (evidence growing old) is reported with the provider's next verdict. `trust` is the provider's trust
    with that evidence (gateway.service.evidence_changed computes it once and calls this)."""
    jobs = _open_jobs(session, provider_id) if jobs is None else jobs
    endpoints = _endpoints(session, jobs, webhooks.TRUST)
    if not endpoints:
        return
    stored = locked(session, ProviderTrustStatus, provider_id)
    previous = stored.status if stored is not None else score([], now).status
    if stored is None:
        stored = ProviderTrustStatus(provider_id=provider_id, status=trust.status, changed_at=now)
        session.add(stored)
    if trust.status == previous:
        return
    stored.status, stored.changed_at = trust.status, now
    for endpoint in endpoints:
        enqueue(session, endpoint, webhooks.trust_event(provider_id, previous, trust.status, trust.score,
                                                        trust.lower_bound, trust.reasons, jobs[endpoint.tenant], now))


# --- delivery -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outgoing:
    """A claimed delivery, with what sending it needs."""

    id: str
    url: str
    secrets: tuple[str, ...]  # each signs the attempt (WebhookEndpoint.signing_secrets)
    body: bytes


@dataclass(frozen=True)
class Outcome:
    """What one attempt got: an HTTP status, or none and why."""

    delivery_id: str
    at: float
    status: int | None
    error: str | None
    duration_s: float

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def claim(db: Database, settings: Settings, now: float, limit: int = BATCH) -> list[Outgoing]:
    """Take up to `limit` due deliveries for this process: lease them (next attempt pushed past this one's
    timeout) and commit, so no transaction is open while sending. Looks with a read first: an idle
    gateway never takes SQLite's write lock for it."""
    with db.reader() as reader:
        due = reader.execute(select(WebhookDelivery.id).where(WebhookDelivery.state == "pending",
                                                              WebhookDelivery.next_attempt_at <= now).limit(1)).first()
    if due is None:
        return []
    with db.writer() as session:
        rows = session.execute(
            select(WebhookDelivery, WebhookEndpoint)
            .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
            .where(WebhookDelivery.state == "pending", WebhookDelivery.next_attempt_at <= now)
            .order_by(WebhookDelivery.next_attempt_at).limit(limit)
            .with_for_update(skip_locked=True, of=WebhookDelivery)).all()
        out = []
        for delivery, endpoint in rows:
            delivery.next_attempt_at = now + settings.webhook_timeout_s + LEASE_SLACK_S
            out.append(Outgoing(delivery.id, endpoint.url, endpoint.signing_secrets(now), delivery.body.encode()))
        session.commit()
    return out


def check_destination(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to, all of them public (verifier.webhooks.refused_address); else
    WebhookError with the first that is not, or that the name does not resolve."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise webhooks.WebhookError(f"url: the host {host} does not resolve ({exc})") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    for address in addresses:
        reason = webhooks.refused_address(address)
        if reason is not None:
            raise webhooks.WebhookError(f"url: the host {host} resolves to {reason}; webhooks go to public "
                                        "addresses only (GPUPROOF_WEBHOOK_ALLOW_PRIVATE=true allows others)")
    return addresses


def check_endpoint_url(url: str, settings: Settings) -> None:
    """At registration: refuse an endpoint whose host resolves to a non-public address (unless allowed)."""
    if settings.webhook_allow_private:
        return
    parts = urlsplit(url)
    check_destination(parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80))


class PublicOnlyBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, except that a connection's host is resolved here, every address it
    resolves to is checked (check_destination), and the connection goes to the checked address itself: a
    name that resolved to a public address at registration and resolves to a private one now (DNS
    rebinding) is refused at the attempt. TLS still verifies the URL's host name (httpcore sends it as SNI
    and checks the certificate against it, whatever address was dialled)."""

    def __init__(self) -> None:
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        try:
            addresses = await anyio.to_thread.run_sync(check_destination, host, port)
        except webhooks.WebhookError as exc:
            raise httpcore.ConnectError(str(exc).removeprefix("url: ")) from None
        return await self._inner.connect_tcp(addresses[0], port, timeout=timeout, local_address=local_address,
                                             socket_options=socket_options)

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("webhooks are not sent to unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def delivery_client(settings: Settings) -> httpx.AsyncClient:
    """The client deliveries are sent with: no redirects, the attempt's timeout, and (unless
    GPUPROOF_WEBHOOK_ALLOW_PRIVATE) direct connections only to public addresses. No proxy from the
    environment (HTTPS_PROXY) is used: with a transport of its own httpx mounts none, and a proxy would
    resolve the name itself, past the address check."""
    transport = httpx.AsyncHTTPTransport()
    if not settings.webhook_allow_private:
        # httpx takes no network backend of its own: its pool is rebuilt with the same defaults and ours
        transport._pool = httpcore.AsyncConnectionPool(  # noqa: SLF001
            ssl_context=httpx.create_ssl_context(), max_connections=100, max_keepalive_connections=20,
            keepalive_expiry=5.0, network_backend=PublicOnlyBackend())
    return httpx.AsyncClient(timeout=settings.webhook_timeout_s, follow_redirects=False, transport=transport)


async def attempt(client: httpx.AsyncClient, outgoing: Outgoing, timeout_s: float) -> Outcome:
    """POST the delivery once, signed with this attempt's timestamp. Redirects are not followed, the
    answer's body is never read, and the whole attempt ends after `timeout_s` (httpx's own timeout bounds
    each read, which a receiver trickling bytes could stretch without end)."""
    at = time.time()
    headers = {"content-type": "application/json", "user-agent": USER_AGENT,
               **webhooks.headers(outgoing.secrets, outgoing.id, int(at), outgoing.body)}
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout_s), client.stream("POST", outgoing.url, content=outgoing.body,
                                                             headers=headers) as response:
            status = response.status_code
    except TimeoutError:
        return Outcome(outgoing.id, at, None, f"no answer within {timeout_s:g} s", time.monotonic() - started)
    except httpx.HTTPError as exc:
        return Outcome(outgoing.id, at, None, f"{type(exc).__name__}: {exc}"[:300], time.monotonic() - started)
    error = None if 200 <= status < 300 else f"HTTP {status}"
    return Outcome(outgoing.id, at, status, error, time.monotonic() - started)


def record(db: Database, settings: Settings, outcomes: Iterable[Outcome], now: float) -> None:
    """Store the attempts' results: delivered, or the next attempt after the backoff, or failed after
    `webhook_max_attempts` failed attempts since the delivery was last queued."""
    with db.writer() as session:
        for o in sorted(outcomes, key=lambda o: o.delivery_id):  # lock order: by id
            delivery = locked(session, WebhookDelivery, o.delivery_id)
            if delivery is None:  # its endpoint was deleted meanwhile
                continue
            session.add(WebhookAttempt(delivery_id=delivery.id, at=o.at, status=o.status, error=o.error,
                                       duration_s=o.duration_s))
            delivery.attempts += 1
            delivery.last_attempt_at, delivery.last_status, delivery.last_error = o.at, o.status, o.error
            if o.ok:
                delivery.state, delivery.delivered_at, delivery.next_attempt_at = "delivered", now, None
                metrics.WEBHOOK_ATTEMPTS.labels(result="delivered").inc()
                continue
            delivery.retries += 1
            failed = delivery.retries >= settings.webhook_max_attempts
            metrics.WEBHOOK_ATTEMPTS.labels(result="failed" if failed else "retry").inc()
            if failed:
                delivery.state, delivery.next_attempt_at = "failed", None
            else:
                delivery.next_attempt_at = now + webhooks.retry_delay(
                    delivery.retries, settings.webhook_backoff_base_s, settings.webhook_backoff_max_s, random.random())
        session.commit()


async def deliver_due(state: State, client: httpx.AsyncClient) -> int:
    """One pass: claim what is due, send it all at once, record the outcomes. Returns how many were sent."""
    claimed = await anyio.to_thread.run_sync(claim, state.db, state.settings, time.time())
    if not claimed:
        return 0
    outcomes = await asyncio.gather(*(attempt(client, c, state.settings.webhook_timeout_s) for c in claimed))
    await anyio.to_thread.run_sync(record, state.db, state.settings, outcomes, time.time())
    return len(claimed)


async def run(state: State) -> None:
    """Deliver until cancelled: a pass every `webhook_poll_s`, or at once after a full batch. A failed pass
    (database unreachable, not migrated) is logged and tried again."""
    settings = state.settings
    async with delivery_client(settings) as client:
        while True:
            sent = 0
            try:
                sent = await deliver_due(state, client)
            except SQLAlchemyError as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                log.error("webhook delivery pass failed (%s: %s)", type(exc).__name__, first)
            except Exception:
                log.exception("webhook delivery pass failed")
            if sent < BATCH:
                await asyncio.sleep(settings.webhook_poll_s)


def prune(session: Session, before: float) -> int:
    """Delete the delivered and failed deliveries made before `before`, with their attempts (the
    maintenance sweep, GPUPROOF_WEBHOOK_RETENTION_S); pending ones stay whatever their age."""
    old = select(WebhookDelivery.id).where(WebhookDelivery.state != "pending", WebhookDelivery.created_at < before)
    session.execute(delete(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(old)))
    result = session.execute(delete(WebhookDelivery).where(WebhookDelivery.state != "pending",
                                                           WebhookDelivery.created_at < before))
    return cast(CursorResult, result).rowcount or 0


def redeliver(session: Session, delivery: WebhookDelivery, now: float) -> None:
    """Queue a delivery again (delivered or failed ones too), due at once, with a fresh set of attempts;
    it keeps its `webhook-id`."""
    delivery.state, delivery.retries, delivery.next_attempt_at = "pending", 0, now
