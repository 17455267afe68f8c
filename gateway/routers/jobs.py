"""Jobs and settlement (marketplace API keys with scopes).

What settlement decides is verifier/'s (trust.settle, hardware.findings, lifecycle.settle: when a decision
is recorded and when it is final); here the evidence is loaded, the job locked and the decision stored.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import Annotated

from fastapi import APIRouter, Depends, Header, status
from gpuproof.gateway import audits, service, tenancy, translog, webhooks
from gpuproof.gateway.auth import api_key
from gpuproof.gateway.limits import limit_ip
from gpuproof.gateway.models import ApiKey, Device, Job, Provider
from gpuproof.gateway.models import Challenge as ChallengeRow
from gpuproof.gateway.problems import Problem
from gpuproof.gateway.schemas import IdPath, JobIn
from gpuproof.gateway.sessions import ReadSessionDep, WriteSessionDep, rolled_back
from gpuproof.gateway.state import StateDep
from gpuproof.verifier import hardware, lifecycle, schedule
from gpuproof.verifier.profiles import UNPROFILED_KEY
from gpuproof.verifier.training import TrainingPolicy
from gpuproof.verifier.trust import settle
from gpuproof.verifier.wire import JobOut
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=[Depends(limit_ip)])


def job_json(job: Job) -> dict:
    return {"id": job.id, "renter_ref": job.renter_ref, "provider_id": job.provider_id, "price_ref": job.price_ref,
            "checkpoint_policy": job.checkpoint_policy, "created_at": job.created_at, "decision": job.decision,
            "reasons": job.reasons, "decided_at": job.decided_at, "final": job.final,
            "training_state": job.training_state, "devices": job.devices, "paid_class": job.paid_class,
            "validators": job.validators, "renter_salt": job.renter_salt,
            "renter_commitment": tenancy.renter_commitment(job)}


def _bind_hardware(session, state, body: JobIn) -> tuple[list[int], str]:  # noqa: ANN001
    """The device positions a job pays for and the class paid for, checked against the provider's devices:
    every named device exists, and the paid class is a known profile (never unprofiled)."""
    devices = session.query(Device).filter_by(provider_id=body.provider_id).order_by(Device.position).all()
    by_position = {d.position: d for d in devices}
    positions = sorted(set(body.devices)) if body.devices is not None else sorted(by_position)
    if body.devices is not None and len(positions) != len(body.devices):
        raise Problem(422, "Invalid request", "devices: a device is named twice")
    missing = [p for p in positions if p not in by_position]
    if missing or not positions:
        raise Problem(422, "Invalid request", f"devices: the provider has no device at position {missing[0]}"
                      if missing else "devices: the provider has no devices")
    profiles = state.verifier.profiles
    if body.paid_class is None:
        claimed = [by_position[p].profile for p in positions]
        if UNPROFILED_KEY in claimed or any(c not in profiles for c in claimed):
            raise Problem(422, "Invalid request", "paid_class: a named device's model is unprofiled; name the "
                          f"class paid for (one of {sorted(profiles)})")
        paid = min(claimed, key=lambda c: (profiles[c].int8_tops, profiles[c].memory_gib))
    elif body.paid_class not in profiles:
        raise Problem(422, "Invalid request", f"paid_class: expected one of {sorted(profiles)}, got "
                      f"{body.paid_class!r}")
    else:
        paid = body.paid_class
    return positions, paid


def device_evidence(session, job: Job, profiles) -> list[hardware.DeviceEvidence]:  # noqa: ANN001
    """The hardware verdicts judged on each device the job names, since the job began (`profiles`: the
    verifier's, to tell which verdicts needed a memory finding)."""
    devices = {d.position: d for d in session.query(Device).filter_by(provider_id=job.provider_id)}
    out = []
    for position in job.devices or sorted(devices):
        device = devices.get(position)
        if device is None:  # a registration update removed it: nothing can prove it any more
            out.append(hardware.DeviceEvidence(position, "", ()))
            continue
        rows = session.execute(select(ChallengeRow.id, ChallengeRow.judged_at, ChallengeRow.verdict,
                                      ChallengeRow.spec, ChallengeRow.profile)
                               .where(ChallengeRow.device_id == device.id, ChallengeRow.state == "judged",
                                      ChallengeRow.issued_at >= job.created_at)
                               .order_by(ChallengeRow.judged_at)).all()
        out.append(hardware.DeviceEvidence(position, device.profile, tuple(
            service.record_of(cid, at, v, spec=spec, profile=profiles.get(key)) for cid, at, v, spec, key in rows)))
    return out


@router.post("", status_code=status.HTTP_201_CREATED, operation_id="create_job", response_model=JobOut)
def create_job(body: JobIn, session: WriteSessionDep, state: StateDep,
               key: Annotated[ApiKey, Depends(api_key("jobs"))],
               idempotency_key: Annotated[str | None, Header(min_length=1, max_length=255)] = None) -> dict:
    """Create a job for a provider (scope `jobs`), bound to hardware: `devices` (positions; default all the
    provider's devices) and `paid_class` (a profile; default the slowest class they claim). Release needs
    passes at or above the paid class on every named device during the job (verifier.hardware). A non-empty
    `checkpoint_policy` (verifier.training.TrainingPolicy: interval, segments, chunks, mode, tau, min_step_s,
    step_flops, workload,
    audit_deadline_s) asks for training proofs: the provider commits checkpoints, segments are replayed,
    and settlement waits for their verdicts.

    With an `Idempotency-Key` header (any string the client chose for this create, unique per API key), a
    create resent with the same key and body gets the job the first one made, answered the same way (201),
    so a client whose answer was lost (a replica died under it) can resend without making a second job; the
    same key with another body is refused (422)."""
    request_sha256 = hashlib.sha256(body.model_dump_json().encode()).hexdigest()
    if idempotency_key is not None:
        earlier = _created_with(session, key, idempotency_key, request_sha256)
        if earlier is not None:
            return rolled_back(session, earlier)
    if body.checkpoint_policy:
        TrainingPolicy.parse(body.checkpoint_policy)  # 422 with the field's reason
    if session.get(Provider, body.provider_id) is None:
        raise Problem(404, "Not found", f"no provider {body.provider_id}")
    positions, paid = _bind_hardware(session, state, body)
    registered = tenancy.registered_validators(session, key.tenant)
    unknown = [v for v in body.validators or [] if v not in registered]
    if unknown:
        raise Problem(422, "Invalid request", f"validators: {unknown[0]} is not one of this tenant's validators "
                      "(register it first: POST /v1/validators)")
    job = Job(id=secrets.token_hex(16), renter_ref=body.renter_ref, provider_id=body.provider_id,
              devices=positions, paid_class=paid, price_ref=body.price_ref,
              checkpoint_policy=body.checkpoint_policy, created_at=time.time(),
              created_by=key.id, final=False, training_state="open" if body.checkpoint_policy else None,
              tenant=key.tenant, renter_salt=secrets.token_hex(16),
              validators=sorted(set(body.validators)) if body.validators is not None else registered,
              idempotency_key=idempotency_key, request_sha256=request_sha256 if idempotency_key else None)
    session.add(job)
    if idempotency_key is not None:
        try:
            session.flush()
        except IntegrityError:  # the same create, committed by another replica since the look-up above
            session.rollback()
            earlier = _created_with(session, key, idempotency_key, request_sha256)
            if earlier is None:
                raise
            return rolled_back(session, earlier)
    # rounds come more often while a job is open: the next one at the earlier of the drawn one and a draw at
    # the job's rate (the provider's devices share one schedule; locked in id order, as a poll locks them)
    devices = session.execute(select(Device).where(Device.provider_id == body.provider_id).order_by(Device.id)
                              .with_for_update()).scalars().all()
    if devices:
        sooner = schedule.sooner_for_a_job(min(d.next_due_at for d in devices), job.created_at,
                                           state.settings.schedule())
        for d in devices:
            d.next_due_at = sooner
    session.commit()
    return job_json(job)


def _created_with(session, key: ApiKey, idempotency_key: str, request_sha256: str) -> dict | None:  # noqa: ANN001
    """The job this API key created with `idempotency_key`, or None; 422 when that create had another body."""
    job = session.execute(select(Job).where(Job.created_by == key.id,
                                            Job.idempotency_key == idempotency_key)).scalar_one_or_none()
    if job is None:
        return None
    if job.request_sha256 != request_sha256:
        raise Problem(422, "Invalid request", f"Idempotency-Key {idempotency_key!r} was used for another job "
                      "request by this key; use a new key for a new job")
    return job_json(job)


@router.get("/{job_id}", operation_id="get_job", response_model=JobOut)
def get_job(job_id: IdPath, session: ReadSessionDep, key: Annotated[ApiKey, Depends(api_key("jobs"))]) -> dict:
    """The job, to its tenant's keys only (another tenant's job is 404, like one that does not exist)."""
    return job_json(tenancy.tenant_job(session, job_id, key))


@router.post("/{job_id}/settlement", operation_id="settle_job", response_model=JobOut)
def settle_job(job_id: IdPath, session: WriteSessionDep, state: StateDep,
               key: Annotated[ApiKey, Depends(api_key("settle"))]) -> dict:
    """The settlement decision: release, hold or refund, with reasons. Recorded in the log whenever it
    changes; release and refund are final and never change again. Only the job's tenant may ask (others: 404).
    The log entry is public: it commits to the renter_ref by a salted hash and never shows it."""
    job = tenancy.tenant_job(session, job_id, key, lock=True)  # one settlement at a time per job (gateway/db.py)
    if job.final:
        return rolled_back(session, job_json(job))
    now = time.time()
    audits.expire_audits(session, state, job.id, now)
    # a challenge the provider left unanswered past its deadline is judged now (a timeout), not only when
    # the provider polls again; one still within its deadline holds the payment until it is judged
    if service.expire_overdue(session, state.verifier, job.provider_id, now, schedule=state.settings.schedule(),
                              grace_s=state.settings.expiry_grace_s):
        state.trust_cache.drop(job.provider_id)
    trust = service.trust_of(session, job.provider_id, now)
    during = [r for r in service.verdict_records(session, job.provider_id, state.verifier.profiles)
              if r.at >= job.created_at]
    profiles = state.verifier.profiles
    findings = hardware.findings(device_evidence(session, job, profiles), job.paid_class or "", profiles)
    decision = settle(trust, during, now, audits.job_checkpoint_verdicts(session, job, now),
                      in_progress=service.open_challenges(session, job.provider_id), hardware=findings)
    settled = lifecycle.settle(lifecycle.Settlement(job.decision, tuple(job.reasons or ()), job.final),
                               decision.decision, decision.reasons)
    if settled is not None:
        job.decision, job.reasons, job.decided_at = settled.decision, list(settled.reasons), now
        job.final = settled.final
        translog.append(session, "settlement", {"job_id": job.id, "provider_id": job.provider_id,
                                                "renter_commitment": tenancy.renter_commitment(job),
                                                "decision": job.decision,
                                                "reasons": job.reasons, "final": job.final}, now)
        webhooks.on_settlement(session, job, now)
    session.commit()
    return job_json(job)
