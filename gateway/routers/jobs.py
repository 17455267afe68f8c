"""Jobs and settlement (marketplace API keys with scopes)."""

from __future__ import annotations

import secrets
import time
from typing import Annotated

from fastapi import APIRouter, Depends, status

from gateway import audits, service, translog
from gateway.db import locked
from gateway.deps import ReadSessionDep, StateDep, WriteSessionDep, api_key, limit_ip, rolled_back
from gateway.models import ApiKey, Job, Provider
from gateway.problems import Problem
from gateway.schemas import IdPath, JobIn
from verifier.training import TrainingPolicy
from verifier.trust import settle

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=[Depends(limit_ip)])


def job_json(job: Job) -> dict:
    return {"id": job.id, "renter_ref": job.renter_ref, "provider_id": job.provider_id, "price_ref": job.price_ref,
            "checkpoint_policy": job.checkpoint_policy, "created_at": job.created_at, "decision": job.decision,
            "reasons": job.reasons, "decided_at": job.decided_at, "final": job.final,
            "training_state": job.training_state}


@router.post("", status_code=status.HTTP_201_CREATED, operation_id="create_job")
def create_job(body: JobIn, session: WriteSessionDep,
               key: Annotated[ApiKey, Depends(api_key("jobs"))]) -> dict:
    """Create a job for a provider (scope `jobs`). A non-empty `checkpoint_policy` (verifier.training.
    TrainingPolicy: interval, segments, chunks, mode, tau, min_step_s, step_flops, workload,
    audit_deadline_s) asks for training proofs: the provider commits checkpoints, segments are replayed,
    and settlement waits for their verdicts."""
    if body.checkpoint_policy:
        TrainingPolicy.parse(body.checkpoint_policy)  # 422 with the field's reason
    if session.get(Provider, body.provider_id) is None:
        raise Problem(404, "Not found", f"no provider {body.provider_id}")
    job = Job(id=secrets.token_hex(16), renter_ref=body.renter_ref, provider_id=body.provider_id,
              price_ref=body.price_ref, checkpoint_policy=body.checkpoint_policy, created_at=time.time(),
              created_by=key.id, final=False, training_state="open" if body.checkpoint_policy else None)
    session.add(job)
    session.commit()
    return job_json(job)


@router.get("/{job_id}", operation_id="get_job")
def get_job(job_id: IdPath, session: ReadSessionDep, key: Annotated[ApiKey, Depends(api_key("jobs"))]) -> dict:
    job = session.get(Job, job_id)
    if job is None:
        raise Problem(404, "Not found", f"no job {job_id}")
    return job_json(job)


@router.post("/{job_id}/settlement", operation_id="settle_job")
def settle_job(job_id: IdPath, session: WriteSessionDep, state: StateDep,
               key: Annotated[ApiKey, Depends(api_key("settle"))]) -> dict:
    """The settlement decision: release, hold or refund, with reasons. Recorded in the log whenever it
    changes; release and refund are final and never change again."""
    job = locked(session, Job, job_id)  # one settlement at a time per job (gateway/db.py)
    if job is None:
        raise Problem(404, "Not found", f"no job {job_id}")
    if job.final:
        return rolled_back(session, job_json(job))
    now = time.time()
    audits.expire_audits(session, state, job.id, now)
    # a challenge the provider left unanswered past its deadline is judged now (a timeout), not only when
    # the provider polls again; one still within its deadline holds the payment until it is judged
    if service.expire_overdue(session, state.verifier, job.provider_id, now):
        state.trust_cache.drop(job.provider_id)
    trust = service.trust_of(session, job.provider_id, now)
    during = [r for r in service.verdict_records(session, job.provider_id) if r.at >= job.created_at]
    decision = settle(trust, during, now, audits.job_checkpoint_verdicts(session, job, now),
                      in_progress=service.open_challenges(session, job.provider_id))
    if decision.decision != job.decision or list(decision.reasons) != job.reasons:
        job.decision, job.reasons, job.decided_at = decision.decision, list(decision.reasons), now
        job.final = decision.decision in ("release", "refund")
        translog.append(session, "settlement", {"job_id": job.id, "provider_id": job.provider_id,
                                                "renter_ref": job.renter_ref, "decision": job.decision,
                                                "reasons": job.reasons, "final": job.final}, now)
    session.commit()
    return job_json(job)
