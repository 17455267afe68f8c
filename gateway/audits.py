"""Segment audits' bookkeeping shared by the training and jobs routers: verdicts, expiry, uploads and
what settlement sees of a job's training evidence. Everything runs in the caller's transaction. The rules
(an audit's states, its expiry, retries) are verifier.training's (AuditState); here they get rows."""

from __future__ import annotations

import logging

from gpuproof.gateway import service, translog, webhooks
from gpuproof.gateway.blobs import BlobStore, StoreUnavailable
from gpuproof.gateway.models import Job, SegmentAudit
from gpuproof.gateway.state import State
from gpuproof.verifier import lifecycle, training
from gpuproof.verifier.trust import CheckpointVerdict
from sqlalchemy import func, select
from sqlalchemy.orm import Session

log = logging.getLogger("gpuproof.gateway")


def state_of(audit: SegmentAudit) -> training.AuditState:
    """The lifecycle's view of a stored audit (verifier.training.AuditState)."""
    return training.AuditState(audit_id=audit.id, state=audit.state, deadline_at=audit.deadline_at,
                               upload_sha256=audit.upload_sha256,
                               openings_digest=None if audit.opened is None else lifecycle.digest(audit.opened),
                               verdict_signature=(audit.verdict or {}).get("signature"))


def blobs(state: State) -> BlobStore:
    return state.blobs


def judge(session: Session, state: State, audit: SegmentAudit, outcome: str, reason: str, now: float,
          **extra: object) -> None:
    """Record a segment verdict and log it, in the caller's transaction."""
    verdict = {"audit_id": audit.id, "job_id": audit.job_id, "outcome": outcome, "start_step": audit.start_step,
               "end_step": audit.end_step, "reason": reason, "tensor": None, "chunk": None, "distance": None,
               "judged_by": "gateway"} | extra
    audit.verdict, audit.outcome, audit.judged_at, audit.state = verdict, outcome, now, "judged"
    translog.append(session, "training-verdict", {"provider_id": audit.provider_id, "verdict": verdict}, now)
    webhooks.on_segment_verdict(session, audit, now)
    service.evidence_changed(session, audit.provider_id, now)
    state.trust_cache.drop(audit.provider_id)


def release_upload(session: Session, state: State, audit: SegmentAudit) -> None:
    """Delete a judged audit's upload unless another open audit holds the same content."""
    if audit.upload_sha256 is not None:
        release_blob(session, state, audit.upload_sha256)


def release_blob(session: Session, state: State, digest: str) -> None:
    """Delete the blob `digest` unless an audit not yet judged names it."""
    others = session.execute(select(func.count()).select_from(SegmentAudit)
                             .where(SegmentAudit.upload_sha256 == digest,
                                    SegmentAudit.state != "judged")).scalar_one()
    if not others:
        try:
            blobs(state).delete(digest)
        except StoreUnavailable as exc:  # the verdict stands; the sweep deletes the unnamed blob later
            log.error("could not delete upload %s: %s", digest, exc)


def expire_audits(session: Session, state: State, job_id: str, now: float) -> int:
    """Fail every audit of the job whose provider did not send its evidence before the deadline
    (verifier.training.audit_expiry)."""
    rows = session.execute(select(SegmentAudit).where(SegmentAudit.job_id == job_id,
                                                      SegmentAudit.state == "requested",
                                                      SegmentAudit.deadline_at < now)
                           .order_by(SegmentAudit.id).with_for_update()  # gateway.db.locked: judged once
                           .execution_options(populate_existing=True)).scalars().all()
    expired = 0
    for a in rows:
        reason = training.audit_expiry(state_of(a), now)
        if reason is None:
            continue
        judge(session, state, a, "fail", reason, now)
        release_upload(session, state, a)
        expired += 1
    return expired


def job_checkpoint_verdicts(session: Session, job: Job, now: float) -> list[CheckpointVerdict]:
    """The job's training evidence as settlement sees it (verifier.trust.CheckpointVerdict)."""
    if job.training_state is None:
        return []
    if job.training_state == "open":
        return [CheckpointVerdict("training run", None, "the provider has not closed it")]
    out = [CheckpointVerdict("training run timing", False, flag) for flag in job.training_flags or []]
    audits = session.execute(select(SegmentAudit).where(SegmentAudit.job_id == job.id)
                             .order_by(SegmentAudit.start_step)).scalars()
    for a in audits:
        label = f"training segment {a.start_step}->{a.end_step}"
        out.append(CheckpointVerdict(label, None if a.outcome is None else a.outcome == "pass",
                                     (a.verdict or {}).get("reason", "") if a.outcome == "fail" else ""))
    return out

