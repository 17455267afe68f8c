"""What the gateway does on its own, every `maintenance_interval_s` (60 s), so that nothing waits for a
provider to come back:

- challenges past their deadline are judged (timeouts), for every provider: one that takes a challenge
  it cannot pass in time and goes silent is scored at once, not on its next poll;
- training audits past their deadline fail ("did not arrive before the deadline");
- upload files left in DATA_DIR/uploads/.incoming by a process that died mid-upload are deleted after
  an hour (a live upload is at most GPUPROOF_BODY_TIMEOUT_S old);
- round-trip probes older than service.RTT_HISTORY_S (1 h; every poll makes one) are deleted, and
  stored request nonces older than `nonce_retention_s` (both would grow without bound).
  Deleting a nonce cannot let its request be replayed: a request is accepted only within
  +-timestamp_window_s of its signed timestamp, which was within the window of when the nonce was
  stored, so 2 x window after that every replay is refused for its timestamp; NONCE_CLOCK_SLACK_S
  more covers clock steps and replicas whose clocks differ;
- the stored scores that public listings filter and sort by (models.ProviderScore) that are older than
  `score_refresh_s` are recomputed, the stalest first: evidence loses weight as it ages, and no verdict
  arrives to update an idle provider's;
- the devices' stored verified classes (models.Device.verified_class, what ?model= listings filter by) are
  worked out again once their `verified_until` passes (as old passes leave the window, the class a device's
  recent passes proved most often can change with no new pass), and those never worked out (after the
  upgrade that added them), first;
- webhook deliveries delivered or failed more than `webhook_retention_s` (30 days) ago are deleted with
  their attempts (gateway/webhooks.py; pending ones stay).

Each provider's and each job's expiry is its own short write transaction (with the row locks of
gateway.db.locked), so a sweep never holds SQLite's write lock for long. Replicas may all sweep: the
locks and the state checks judge each challenge once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass
from typing import cast

import anyio.to_thread
from gpuproof.gateway import audits, blobs, metrics, service, webhooks
from gpuproof.gateway.db import locked
from gpuproof.gateway.models import (
    Challenge,
    Device,
    Job,
    ProviderScore,
    RequestNonce,
    RttProbe,
    SegmentAudit,
    ValidatorNonce,
)
from gpuproof.gateway.state import State
from gpuproof.verifier import lifecycle
from sqlalchemy import CursorResult, Delete, delete, func, or_, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

NONCE_CLOCK_SLACK_S = 300.0
STALE_UPLOAD_S = 3600.0
BATCH = 500  # providers and jobs per sweep; a backlog is worked off over the next sweeps

log = logging.getLogger("gpuproof.gateway")


def nonce_retention_s(timestamp_window_s: float) -> float:
    return 2 * timestamp_window_s + NONCE_CLOCK_SLACK_S


@dataclass(frozen=True)
class Swept:
    timeouts: int
    audits: int
    nonces: int
    probes: int
    partial_uploads: int
    unnamed_blobs: int = 0
    webhook_deliveries: int = 0
    scores: int = 0
    verified_classes: int = 0


def sweep(state: State, now: float) -> Swept:
    """One pass: judge what is overdue and delete the nonces that can no longer matter."""
    with state.db.reader() as reader:
        providers = reader.execute(
            select(Challenge.provider_id).where(Challenge.state.in_(lifecycle.OPEN_STATES),
                                                (Challenge.issued_at + Challenge.deadline_s
                                                 < now - state.settings.expiry_grace_s)
                                                | (Challenge.delivered_at.is_(None)
                                                   & (Challenge.issued_at < now - state.settings.start_window_s)))
            .distinct().limit(BATCH)).scalars().all()
        jobs = reader.execute(
            select(SegmentAudit.job_id).where(SegmentAudit.state == "requested", SegmentAudit.deadline_at < now)
            .distinct().limit(BATCH)).scalars().all()
    timeouts = expired = 0
    for provider_id in providers:
        with state.db.writer() as session:
            judged = service.expire_overdue(session, state.verifier, provider_id, now,
                                            schedule=state.settings.schedule(), grace_s=state.settings.expiry_grace_s)
            session.commit()
        if judged:
            state.trust_cache.drop(provider_id)
            timeouts += judged
    for job_id in jobs:
        with state.db.writer() as session:
            locked(session, Job, job_id)  # the lock order: job, then its audits (gateway/db.py)
            expired += audits.expire_audits(session, state, job_id, now)
            session.commit()
    cutoff = now - nonce_retention_s(state.settings.timestamp_window_s)
    with state.db.writer() as session:
        nonces = _deleted(session, delete(RequestNonce).where(RequestNonce.seen_at < cutoff))
        nonces += _deleted(session, delete(ValidatorNonce).where(ValidatorNonce.seen_at < cutoff))
        probes = _deleted(session, delete(RttProbe).where(RttProbe.sent_at < now - service.RTT_HISTORY_S))
        hooks = webhooks.prune(session, now - state.settings.webhook_retention_s)
        session.commit()
    swept = Swept(timeouts, expired, nonces, probes, _stale_uploads(state, now), _unnamed_blobs(state, now), hooks,
                  _refresh_scores(state, now), _refresh_verified(state, now))
    for what, count in vars(swept).items():
        metrics.SWEPT.labels(what=what).inc(count)
    return swept


def _refresh_scores(state: State, now: float) -> int:
    """Recompute the stored scores older than settings.score_refresh_s, the stalest first, BATCH at most,
    each in its own short write transaction."""
    with state.db.reader() as reader:
        stale = reader.execute(select(ProviderScore.provider_id)
                               .where(ProviderScore.computed_at < now - state.settings.score_refresh_s)
                               .order_by(ProviderScore.computed_at).limit(BATCH)).scalars().all()
    for provider_id in stale:
        with state.db.writer() as session:
            service.store_trust(session, provider_id, now)
            session.commit()
    return len(stale)


def _refresh_verified(state: State, now: float) -> int:
    """Work out again the verified classes of the providers with a device whose class no longer surely holds
    (`verified_until` passed) or was never worked out (null, left by migration 0029: first), BATCH providers
    at most, each in its own short write transaction under its devices' and score row's locks (the order of
    gateway/db.py, as a verdict takes them)."""
    with state.db.reader() as reader:
        until = func.coalesce(Device.verified_until, 0.0)
        due = reader.execute(select(Device.provider_id)  # (the index on verified_until: null, or passed)
                             .where(or_(Device.verified_until.is_(None), Device.verified_until <= now))
                             .group_by(Device.provider_id)
                             .order_by(func.min(until)).limit(BATCH)).scalars().all()
    for provider_id in due:
        with state.db.writer() as session:  # the lock order of a poll and a verdict: the devices (by id) first
            session.execute(select(Device.id).where(Device.provider_id == provider_id).order_by(Device.id)
                            .with_for_update()).all()
            locked(session, ProviderScore, provider_id)
            service.store_verified(session, provider_id, now, state.verifier.profiles)
            session.commit()
    return len(due)


def _stale_uploads(state: State, now: float) -> int:
    """Delete the partial upload files older than STALE_UPLOAD_S (their process died mid-upload)."""
    gone = 0
    for part in audits.blobs(state).incoming.glob("*.part"):
        with contextlib.suppress(FileNotFoundError):  # finished or removed meanwhile
            if part.stat().st_mtime < now - max(STALE_UPLOAD_S, 2 * state.settings.body_timeout_s):
                part.unlink()
                gone += 1
    return gone


def _unnamed_blobs(state: State, now: float) -> int:
    """Delete the stored blobs no open audit names, STALE_UPLOAD_S after they were stored (a crash between
    storing and naming one, or an answer refused after its upload was stored): they would hold quota."""
    with state.db.reader() as reader:
        named = {d for d in reader.execute(select(SegmentAudit.upload_sha256).where(
            SegmentAudit.upload_sha256.is_not(None), SegmentAudit.state != "judged")).scalars() if d}
    store = audits.blobs(state)
    try:
        stale = blobs.stale_unnamed(store.list(), named, now, STALE_UPLOAD_S)
        for digest in stale:
            store.delete(digest)
    except blobs.StoreUnavailable as exc:
        log.error("maintenance: unnamed blobs not swept (%s)", exc)
        return 0
    return len(stale)


def _deleted(session: Session, statement: Delete) -> int:
    return cast(CursorResult, session.execute(statement)).rowcount or 0


async def run(state: State) -> None:
    """Sweep at start-up (what fell due while the gateway was down), then every interval (+-10%, so
    that replicas drift apart). A failed sweep is logged and tried again at the next interval."""
    interval = state.settings.maintenance_interval_s
    while True:
        try:
            swept = await anyio.to_thread.run_sync(sweep, state, time.time())
            if swept.timeouts or swept.audits:
                log.info("maintenance: %d challenge timeouts, %d audit timeouts judged, %d nonces deleted",
                         swept.timeouts, swept.audits, swept.nonces)
        except SQLAlchemyError as exc:  # a busy, unreachable or not yet migrated database: one line
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            log.error("maintenance sweep failed (%s: %s); next try in %.0f s", type(exc).__name__, first, interval)
        except Exception:  # a defect: with its traceback
            log.exception("maintenance sweep failed; next try in %.0f s", interval)
        await asyncio.sleep(interval * random.uniform(0.9, 1.1))
