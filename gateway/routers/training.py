"""Training-work proofs over HTTP (docs/protocol.md, "Training proofs"; logic in verifier/training.py).

Provider (signed):  POST /v1/jobs/{id}/checkpoints        one commitment, timestamped on arrival
                    POST /v1/jobs/{id}/checkpoints/close  end of the run: flags, then segments drawn
                    PUT  /v1/audits/{id}/state            the state at the segment's start (raw bytes)
                    POST /v1/audits/{id}/openings         the segment's batches and chunks of its end
Validator (API key, scope `replay`; the job's tenant's key, or a request signed by a validator the job names):
                    GET  /v1/audits/{id}/materials, GET /v1/audits/{id}/state
                    POST /v1/audits/{id}/result           signed by a validator the job names
Anyone:             GET  /v1/jobs/{id}/training           commitments, flags, audits and verdicts
"""

from __future__ import annotations

import contextlib
import hmac
import json
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response, status
from fastapi.responses import FileResponse, StreamingResponse
from gpuproof.gateway import audits, blobs, metrics, service, tenancy, translog
from gpuproof.gateway.auth import SignedProviderDep, api_key, raw_body, signed_target
from gpuproof.gateway.db import locked
from gpuproof.gateway.limits import limit_ip
from gpuproof.gateway.models import ApiKey, Device, Job, Provider, SegmentAudit, TrainingCommitment
from gpuproof.gateway.problems import Problem
from gpuproof.gateway.schemas import CheckpointIn, IdPath, ReplayResultIn, SegmentOpeningsIn
from gpuproof.gateway.sessions import ReadSessionDep, WriteSessionDep, in_read_threads, rolled_back
from gpuproof.gateway.state import State, StateDep, arrived_at
from gpuproof.gateway.uploads import SignedUploadDep, Upload, receive_upload
from gpuproof.kernels.errors import InvalidParameter, ProofError
from gpuproof.verifier import checkpoints, lifecycle, signatures, training
from gpuproof.verifier.profiles import lookup
from gpuproof.verifier.wire import AuditOut, CheckpointOut, ReplayMaterialsOut, TrainingEvidenceOut, TrainingOut
from sqlalchemy import func, select
from sqlalchemy.orm import Session

router = APIRouter(tags=["training"], dependencies=[Depends(limit_ip)])

STATE_PATH = "/v1/audits/{audit_id}/state"


def _job(session: Session, job_id: str, lock: bool = False) -> Job:
    """The job; `lock`: read afresh and locked for this write transaction (gateway.db.locked), which
    serialises every write to the job's training evidence (commitments, close, its audits)."""
    job = locked(session, Job, job_id) if lock else session.get(Job, job_id)
    if job is None:
        raise Problem(404, "Not found", f"no job {job_id}")
    return job


def _policy(job: Job) -> training.TrainingPolicy:
    if job.training_state is None:
        raise Problem(409, "No training proofs", f"job {job.id} was created without a checkpoint_policy")
    return training.TrainingPolicy.parse(job.checkpoint_policy)


def _own_job(auth, job_id: str) -> tuple[Job, training.TrainingPolicy]:  # noqa: ANN001
    """The job and its policy, in the signed request's write transaction (its nonce claimed first)."""
    auth.claim_nonce()
    job = _job(auth.session, job_id, lock=True)
    if job.provider_id != auth.provider.id:
        raise Problem(403, "Forbidden", f"job {job_id} belongs to another provider")
    return job, _policy(job)


def manifest_json_of(manifest: Any, request: Any) -> list[dict]:
    """A commitment's manifest as JSON: from the signed body it came in, which is stored once, in `request`
    (issue 18: bodies are stored once); from the `manifest` column for rows stored before that."""
    if manifest is not None:
        return manifest
    return json.loads(request["body"])["manifest"]


def received_of(row: TrainingCommitment) -> training.Received:
    return training.Received(step=row.step, root=row.root, batch_hash=row.batch_hash, prev_hash=row.prev_hash,
                             hash=row.hash,
                             manifest=tuple(checkpoints.manifest_from_json(manifest_json_of(row.manifest,
                                                                                             row.request))),
                             received_at=row.received_at)


def _commitments(session: Session, job_id: str) -> list[TrainingCommitment]:
    return list(session.execute(select(TrainingCommitment).where(TrainingCommitment.job_id == job_id)
                                .order_by(TrainingCommitment.step)).scalars())


def commitment_json(row: TrainingCommitment) -> dict:
    return {"step": row.step, "root": row.root.hex(), "batch_hash": row.batch_hash.hex(),
            "prev_hash": row.prev_hash.hex(), "hash": row.hash.hex(), "received_at": row.received_at}


def audit_json(a: SegmentAudit) -> dict:
    return {"audit_id": a.id, "job_id": a.job_id, "start_step": a.start_step, "end_step": a.end_step,
            "chunks": a.chunks, "drawn_at": a.drawn_at, "deadline_at": a.deadline_at, "state": a.state,
            "uploaded": a.upload_sha256 is not None, "opened": a.opened is not None, "outcome": a.outcome,
            "verdict": a.verdict}


def _own_audit(session: Session, audit_id: str, provider_id: str, lock: bool = False) -> SegmentAudit:
    audit = locked(session, SegmentAudit, audit_id) if lock else session.get(SegmentAudit, audit_id)
    if audit is None:
        raise Problem(404, "Not found", f"no audit {audit_id}")
    if audit.provider_id != provider_id:
        raise Problem(403, "Forbidden", f"audit {audit_id} belongs to another provider")
    return audit


def _audit_to_answer(auth, state, job_id: str, audit_id: str, now: float) -> SegmentAudit:  # noqa: ANN001
    """The provider's audit, locked for its answer (an upload or openings), in the signed request's write
    transaction: its nonce claimed, then the job locked (the lock order: job, then its audits; gateway/db.py)
    and its overdue audits judged first, so a late answer gets its 409 and the expiry stands."""
    session = auth.session
    auth.claim_nonce()
    _job(session, job_id, lock=True)
    if audits.expire_audits(session, state, job_id, now):
        session.commit()
        _job(session, job_id, lock=True)
    return _own_audit(session, audit_id, auth.provider.id, lock=True)


def _answered(session: Session, audit: SegmentAudit, part: training.AuditPart, content_digest: str) -> dict | None:
    """None if this part of the audit is to be stored; the stored answer for a retry of the same content
    (verifier.training.answer_audit raises for other content)."""
    if training.answer_audit(audits.state_of(audit), part, content_digest) == "store":
        return None
    return rolled_back(session, audit_json(audit))  # a retry: nothing new, not even its nonce


def _commitment(session: Session, job_id: str, step: int) -> TrainingCommitment:
    row = session.get(TrainingCommitment, (job_id, step))
    assert row is not None, "an audit always names stored commitments"
    return row


def _bounded_manifest(state: State, body: CheckpointIn) -> list[dict]:
    """The commitment's manifest as JSON, held to the stated limits (422 naming the setting): at most
    GPUPROOF_MAX_MANIFEST_TENSORS tensors and GPUPROOF_MAX_MANIFEST_BYTES of canonical JSON, what it is
    stored as (issue 18: a run's manifests are stored and read back; each must stay small)."""
    items = [t.model_dump() for t in body.manifest]
    most = state.settings.max_manifest_tensors
    if len(items) > most:
        raise Problem(422, "Invalid request", f"manifest: {len(items)} tensors; at most {most} "
                      "(GPUPROOF_MAX_MANIFEST_TENSORS)")
    size = len(json.dumps(items, separators=(",", ":")))
    if size > state.settings.max_manifest_bytes:
        raise Problem(422, "Invalid request", f"manifest: {size} bytes of JSON; at most "
                      f"{state.settings.max_manifest_bytes} (GPUPROOF_MAX_MANIFEST_BYTES)")
    return items


@router.post("/v1/jobs/{job_id}/checkpoints", status_code=status.HTTP_201_CREATED, operation_id="post_checkpoint",
             response_model=CheckpointOut,
             responses={200: {"model": CheckpointOut, "description": "a retry: the stored commitment"}})
def post_checkpoint(job_id: IdPath, body: CheckpointIn, auth: SignedProviderDep, state: StateDep,
                    request: Request, response: Response, raw: Annotated[bytes, Depends(raw_body)]) -> dict:
    """One checkpoint commitment, timestamped by the gateway on arrival and appended to the log. It must
    extend the job's hash chain (step 0 first, then every `interval` steps). A retry of a stored
    commitment answers 200 with the stored one."""
    session, now = auth.session, arrived_at(request)
    job, policy = _own_job(auth, job_id)
    raw_hashes = {k: bytes.fromhex(getattr(body, k)) for k in ("root", "batch_hash", "prev_hash", "hash")}
    stored = session.get(TrainingCommitment, (job_id, body.step))
    count = session.execute(select(func.count()).select_from(TrainingCommitment)
                            .where(TrainingCommitment.job_id == job_id)).scalar_one()
    closed_at = None if job.training_state == "open" else job.closed_at
    if training.admit(job_id, body.step, raw_hashes["hash"], stored.hash if stored is not None else None,
                      closed_at, count, policy) == "replay":
        assert stored is not None
        response.status_code = status.HTTP_200_OK
        return rolled_back(session, commitment_json(stored))  # a retry: nothing new, not even its nonce
    manifest = checkpoints.manifest_from_json(_bounded_manifest(state, body))
    new = training.Received(step=body.step, manifest=tuple(manifest), received_at=now, **raw_hashes)
    last = session.execute(select(TrainingCommitment).where(TrainingCommitment.job_id == job_id)
                           .order_by(TrainingCommitment.step.desc()).limit(1)).scalar_one_or_none()
    training.check_next(received_of(last) if last else None, new, policy)
    signed = {"timestamp": int(request.headers["X-Gpuproof-Timestamp"]), "nonce": auth.nonce,
              "signature": request.headers["X-Gpuproof-Signature"], "method": request.method,
              "path": signed_target(request), "audience": request.app.state.gp.audience,
              "version": signatures.SIGNATURE_VERSION,
              "body": raw.decode()}  # with the provider's public key, anyone can re-check the signature
    row = TrainingCommitment(job_id=job_id, step=body.step, manifest=None,  # it is in the signed body
                             received_at=now, request=signed, **raw_hashes)
    session.add(row)
    translog.append(session, "checkpoint", {"job_id": job_id, "provider_id": job.provider_id, "step": body.step,
                                            "hash": body.hash, "root": body.root, "received_at": now}, now)
    session.commit()
    return commitment_json(row)


@router.post("/v1/jobs/{job_id}/checkpoints/close", operation_id="close_training_run", response_model=TrainingOut)
def close_run(job_id: IdPath, auth: SignedProviderDep, state: StateDep) -> dict:
    """The run is over: the arrival times are checked (flags), then q segments and c chunks of each are
    drawn with the CSPRNG, after every commitment is stored. Idempotent: a second close returns the same."""
    session, now = auth.session, time.time()
    planned = None
    with state.db.reader() as reader:  # the draw, outside the write lock (issue 18)
        job = reader.get(Job, job_id)
        if job is not None and job.provider_id == auth.provider.id and job.training_state == "open":
            with contextlib.suppress(lifecycle.LifecycleError):  # raised again, in order, under the lock
                planned = _plan_close(reader, job, _policy(job), now)
    job, policy = _own_job(auth, job_id)
    if job.training_state == "closed":
        return rolled_back(session, training_json(session, job))
    if planned is None or planned[1] != _seen(session, job_id):  # a commitment came in meanwhile: draw again
        planned = _plan_close(session, job, policy, now)
    closed = planned[0]
    received_count, last_step = planned[1]
    flags = list(closed.flags)
    job.training_state, job.closed_at, job.training_flags = "closed", closed.closed_at, flags
    for d in closed.audits:
        session.add(SegmentAudit(id=secrets.token_hex(16), job_id=job_id, provider_id=job.provider_id,
                                 start_step=d.start_step, end_step=d.end_step, chunks=[list(c) for c in d.chunks],
                                 drawn_at=closed.closed_at, deadline_at=closed.deadline_at, state="requested"))
    session.flush()
    last_hash = session.execute(select(TrainingCommitment.hash).where(
        TrainingCommitment.job_id == job_id, TrainingCommitment.step == last_step)).scalar_one()
    translog.append(session, "training-close", {"job_id": job_id, "provider_id": job.provider_id,
                                                "commitments": received_count, "last_hash": last_hash.hex(),
                                                "flags": flags,
                                                "segments": [[d.start_step, d.end_step] for d in closed.audits]},
                    now)
    service.evidence_changed(session, job.provider_id, now)
    answer = training_json(session, job)  # before the commit: no transaction is left open (gateway/sessions.py)
    session.commit()
    state.trust_cache.drop(job.provider_id)
    return answer


def _seen(session: Session, job_id: str) -> tuple[int, int | None]:
    """How many commitments the job has and its last step (an indexed count, no rows read)."""
    count, last = session.execute(select(func.count(), func.max(TrainingCommitment.step))
                                  .where(TrainingCommitment.job_id == job_id)).one()
    return int(count), last


def _plan_close(session: Session, job: Job, policy: training.TrainingPolicy,
                now: float) -> tuple[training.ClosedRun, tuple[int, int | None]]:
    """The close's flags and draws (verifier.training.close_run) from the commitments' chain fields and
    arrival times alone, parsing only the drawn segments' end manifests (q of them), never the run's
    (issue 18: 200 commitments of 4096 tensors were re-parsed under SQLite's write lock for 43.8 s);
    with what it saw, (count, last step), so the write transaction can tell that nothing came in since."""
    tc = TrainingCommitment
    rows = session.execute(select(tc.step, tc.root, tc.batch_hash, tc.prev_hash, tc.hash, tc.received_at)
                           .where(tc.job_id == job.id).order_by(tc.step)).all()
    received = [training.Received(step=r.step, root=r.root, batch_hash=r.batch_hash, prev_hash=r.prev_hash,
                                  hash=r.hash, manifest=(), received_at=r.received_at) for r in rows]

    def manifest_of(end: training.Received) -> list[checkpoints.TensorEntry]:
        stored = session.execute(select(tc.manifest, tc.request).where(tc.job_id == job.id, tc.step == end.step)).one()
        return checkpoints.manifest_from_json(manifest_json_of(stored.manifest, stored.request))

    models = session.execute(select(Device.model).where(Device.provider_id == job.provider_id)).scalars()
    closed = training.close_run(job.id, received, policy, [lookup(m).int8_tops for m in models], now,
                                manifest_of=manifest_of)
    return closed, (len(rows), rows[-1].step if rows else None)


def training_json(session: Session, job: Job) -> dict:
    audits = session.execute(select(SegmentAudit).where(SegmentAudit.job_id == job.id)
                             .order_by(SegmentAudit.start_step)).scalars()
    return {"job_id": job.id, "state": job.training_state, "closed_at": job.closed_at, "policy": job.checkpoint_policy,
            "flags": job.training_flags or [], "audits": [audit_json(a) for a in audits]}


@router.get("/v1/jobs/{job_id}/training", operation_id="get_training", response_model=TrainingEvidenceOut)
@in_read_threads(TrainingEvidenceOut)
def get_training(job_id: IdPath, session: ReadSessionDep) -> dict:
    """The job's training evidence: commitments with their arrival times, flags, audits and verdicts
    (hashes only: the renter's weights are never shown here)."""
    job = _job(session, job_id)
    _policy(job)
    return training_json(session, job) | {"commitments": [commitment_json(r) for r in _commitments(session, job_id)]}


def _expected_upload(audit_id: IdPath, auth: SignedUploadDep, state: StateDep) -> tuple[bytes, list, str]:
    """The start commitment's root and manifest and the job of an audit that expects this upload: checked
    from the signed headers before a byte of the body is read (404 no such audit, 403 another provider's,
    409 judged or uploaded with other content)."""
    assert auth.declared is not None
    with state.db.reader() as reader:
        audit = _own_audit(reader, audit_id, auth.provider.id)
        training.answer_audit(audits.state_of(audit), "uploaded", auth.declared.sha256)  # a retry goes on
        _check_quotas(reader, state, auth.provider.id, auth.declared.sha256, auth.declared.size)
        start = _commitment(reader, audit.job_id, audit.start_step)
        return start.root, checkpoints.manifest_from_json(manifest_json_of(start.manifest, start.request)), audit.job_id


def _check_quotas(reader, state: State, provider_id: str, sha256: str, size: int) -> None:  # noqa: ANN001
    """Refuse an upload that would take its provider's held uploads or the whole store over a quota, from
    the declared length alone (issue 18): 413 when it is larger than a provider's quota, 507 + Retry-After
    when what is held (uploads whose segment has no verdict yet) leaves no room. Counted from the database,
    so it is the same for the local and the S3 store and across replicas; the store's own count
    (blobs.BlobStore.put_file) stays as the last word. Content already held costs nothing."""
    settings = state.settings
    held = (SegmentAudit.upload_sha256.is_not(None), SegmentAudit.state != "judged")
    if reader.execute(select(SegmentAudit.id).where(SegmentAudit.upload_sha256 == sha256, *held)
                      .limit(1)).first() is not None:
        return
    later = "uploads are kept until their segment's verdict; try again later"
    per = settings.upload_quota_bytes_per_provider
    if per and size > per:
        raise Problem(413, "Upload too large", f"the upload declares {size} bytes, more than a provider's "
                      f"upload quota of {per} (GPUPROOF_UPLOAD_QUOTA_BYTES_PER_PROVIDER)")
    if per:
        mine = reader.execute(select(func.coalesce(func.sum(SegmentAudit.upload_bytes), 0))
                              .where(SegmentAudit.provider_id == provider_id, *held)).scalar_one()
        if mine + size > per:
            metrics.BLOB_QUOTA_REFUSALS.inc()
            raise Problem(507, "Insufficient storage", f"this provider's uploads awaiting their verdicts hold "
                          f"{mine} bytes; {size} more would pass its quota of {per} "
                          f"(GPUPROOF_UPLOAD_QUOTA_BYTES_PER_PROVIDER); {later}", retry_after=60)
    if settings.blob_quota_bytes or settings.blob_quota_objects:
        stored = select(SegmentAudit.upload_sha256, SegmentAudit.upload_bytes).where(*held).distinct().subquery()
        used, objects = reader.execute(select(func.coalesce(func.sum(stored.c.upload_bytes), 0), func.count())
                                       .select_from(stored)).one()
        if settings.blob_quota_objects and objects + 1 > settings.blob_quota_objects:
            metrics.BLOB_QUOTA_REFUSALS.inc()
            raise Problem(507, "Insufficient storage", f"the upload store holds {objects} uploads awaiting "
                          f"their verdicts, its quota is {settings.blob_quota_objects} "
                          f"(GPUPROOF_BLOB_QUOTA_OBJECTS); {later}", retry_after=60)
        if settings.blob_quota_bytes and used + size > settings.blob_quota_bytes:
            metrics.BLOB_QUOTA_REFUSALS.inc()
            raise Problem(507, "Insufficient storage", f"the upload store holds {used} bytes awaiting verdicts; "
                          f"{size} more would pass its quota of {settings.blob_quota_bytes} "
                          f"(GPUPROOF_BLOB_QUOTA_BYTES); {later}", retry_after=60)


async def _upload(request: Request, state: StateDep, auth: SignedUploadDep,
                  expected: Annotated[tuple[bytes, list, str], Depends(_expected_upload)]) -> AsyncIterator[Upload]:
    assert auth.declared is not None
    async with receive_upload(request, state, auth.declared) as upload:
        yield upload


@router.put(STATE_PATH, operation_id="upload_state", response_model=AuditOut,
            openapi_extra={"requestBody": {"content": {"application/octet-stream": {}}, "required": True}})
def upload_state(audit_id: IdPath, auth: SignedUploadDep, state: StateDep,
                 expected: Annotated[tuple[bytes, list, str], Depends(_expected_upload)],
                 upload: Annotated[Upload, Depends(_upload, scope="function")]) -> dict:
    """The state at the segment's start: each tensor's little-endian bytes in manifest order
    (verifier.checkpoints.state_bytes). Authenticated from its headers (the signature covers the declared
    SHA-256 and length) and checked against the audit before a byte is read; then streamed to disk and
    hashed as it arrives, checked against the committed root, and stored by content until the verdict. A
    state that does not match fails the segment at once."""
    session, now = auth.session, time.time()
    root, manifest, job_id = expected  # read outside the write lock
    digest = upload.sha256
    try:
        with open(upload.path, "rb") as fh:
            matches = hmac.compare_digest(checkpoints.root_of_file(fh, manifest), root)
        problem = "" if matches else "its root differs"
    except (ProofError, InvalidParameter) as exc:
        matches, problem = False, str(exc)
    # stored before the row names it (a crash leaves an unnamed blob, deleted by the sweep, never a dangling
    # name) and before any lock is taken: an upload to S3 takes seconds, SQLite's write lock would wait on it
    stored = matches and _store_blob(state, upload.path, digest)
    try:
        audit = _audit_to_answer(auth, state, job_id, audit_id, now)
        if (answered := _answered(session, audit, "uploaded", digest)) is not None:
            return answered
        # again, under the provider's row lock: two uploads checked at once before either was recorded would
        # both pass the check made before their bodies were read (lock order: job, audit, then provider)
        # FOR NO KEY UPDATE: it does not wait for the KEY SHARE locks that rows naming the provider take (a
        # concurrent request's nonce), which FOR UPDATE would, deadlocking with that request's job lock
        session.execute(select(Provider.id).where(Provider.id == auth.provider.id).with_for_update(key_share=True))
        _check_quotas(session, state, auth.provider.id, digest, upload.size)
    except (Problem, lifecycle.LifecycleError):
        if stored:  # refused (late, judged, other content): nothing names the new blob
            with state.db.reader() as reader:
                audits.release_blob(reader, state, digest)
        raise
    audit.upload_sha256, audit.upload_bytes = digest, upload.size
    if not matches:
        audits.judge(session, state, audit, "fail", f"the uploaded state does not match the root committed at step "
               f"{audit.start_step}: {problem}", now)
    else:
        audit.state = training.after_answer(audits.state_of(audit))
    session.commit()
    return audit_json(audit)


def _store_blob(state: State, path: Path, digest: str) -> bool:
    """Put the upload in the blob store: True if this call stored it, False if it was stored already."""
    try:
        return audits.blobs(state).put_file(path, digest)
    except blobs.QuotaExceeded as exc:
        metrics.BLOB_QUOTA_REFUSALS.inc()
        raise Problem(507, "Insufficient storage", f"{exc}; uploads are kept until their segment's verdict, "
                      "try again later", retry_after=60) from None
    except blobs.StoreUnavailable as exc:
        raise Problem(503, "Blob store unavailable", str(exc), retry_after=10) from None


@router.post("/v1/audits/{audit_id}/openings", operation_id="post_segment_openings", response_model=AuditOut)
def post_segment_openings(audit_id: IdPath, body: SegmentOpeningsIn, auth: SignedProviderDep,
                          state: StateDep) -> dict:
    """The segment's batch indices and the requested chunks of its end state with their audit paths,
    checked on arrival against the end commitment (batch hash, chunk set, inclusion proofs)."""
    session, now = auth.session, time.time()
    opened = [training.OpenedChunk(o.name, o.index, bytes.fromhex(o.chunk), tuple(bytes.fromhex(h) for h in o.path))
              for o in body.openings]
    with state.db.reader() as reader:
        audit = _own_audit(reader, audit_id, auth.provider.id)
        end = received_of(_commitment(reader, audit.job_id, audit.end_step))
        requested = [(str(n), int(i)) for n, i in audit.chunks]
        job_id, steps = audit.job_id, audit.end_step - audit.start_step
    try:
        training.check_openings(end, requested, body.batches, opened, steps)
        failure = None
    except training.SegmentFailure as exc:
        failure = exc
    wire = {"batches": body.batches, "openings": [o.model_dump() for o in body.openings]}
    audit = _audit_to_answer(auth, state, job_id, audit_id, now)
    if (answered := _answered(session, audit, "opened", lifecycle.digest(wire))) is not None:
        return answered
    audit.opened = wire
    if failure is not None:
        audits.judge(session, state, audit, "fail", str(failure), now, tensor=failure.tensor, chunk=failure.chunk)
        audits.release_upload(session, state, audit)
    else:
        audit.state = training.after_answer(audits.state_of(audit))
    session.commit()
    return audit_json(audit)


def _replay_audit(session: Session, audit_id: str, lock: bool = False) -> SegmentAudit:
    audit = session.get(SegmentAudit, audit_id)
    if audit is None:
        raise Problem(404, "Not found", f"no audit {audit_id}")
    if lock:  # the lock order: job, then its audits (gateway/db.py)
        _job(session, audit.job_id, lock=True)
        audit = locked(session, SegmentAudit, audit_id)
        assert audit is not None  # audits are never deleted
    return audit


def _evidence_audit(session: Session, audit_id: str, key: ApiKey, request: Request) -> SegmentAudit:
    """The audit, if the key's tenant owns its job or the request is signed by a validator the job names;
    else 404, as for an audit that does not exist."""
    audit = _replay_audit(session, audit_id)
    if not tenancy.may_read_evidence(session, _job(session, audit.job_id), key, tenancy.signing_validator(request)):
        raise Problem(404, "Not found", f"no audit {audit_id}")
    return audit


def replay_fields(audit: SegmentAudit, start: TrainingCommitment, end: TrainingCommitment,
                  result: dict) -> dict:
    return training.replay_fields(audit.id, audit.job_id, audit.start_step, audit.end_step, start.root.hex(),
                                  end.root.hex(), end.hash.hex(), audit.upload_sha256, result)


@router.get("/v1/audits/{audit_id}/materials", operation_id="get_replay_materials", response_model=ReplayMaterialsOut)
def get_materials(audit_id: IdPath, request: Request, session: ReadSessionDep,
                  key: Annotated[ApiKey, Depends(api_key("replay"))]) -> dict:
    """Everything a validator needs to replay the segment except the state itself (GET .../state). For the
    job's tenant's keys and the validators the job names (a request signed by one: gateway/tenancy.py)."""
    audit = _evidence_audit(session, audit_id, key, request)
    training.require_ready(audits.state_of(audit), "replay needs the upload and the openings")
    job = _job(session, audit.job_id)
    start, end = (_commitment(session, audit.job_id, s) for s in (audit.start_step, audit.end_step))
    return {"audit": audit_json(audit), "policy": job.checkpoint_policy,
            "start": commitment_json(start) | {"manifest": manifest_json_of(start.manifest, start.request)},
            "end": commitment_json(end) | {"manifest": manifest_json_of(end.manifest, end.request)},
            "upload_sha256": audit.upload_sha256, "upload_bytes": audit.upload_bytes,
            "batches": audit.opened["batches"], "openings": audit.opened["openings"]}


@router.get(STATE_PATH, operation_id="get_replay_state", response_class=Response,
            responses={200: {"content": {"application/octet-stream": {"schema": {"type": "string",
                                                                                  "format": "binary"}}},
                             "description": "the uploaded state"}})
def get_state(audit_id: IdPath, request: Request, session: ReadSessionDep, state: StateDep,
              key: Annotated[ApiKey, Depends(api_key("replay"))]) -> Response:
    """The uploaded state: the renter's weights, for the job's tenant's keys and the validators it names."""
    audit = _evidence_audit(session, audit_id, key, request)
    training.require_ready(audits.state_of(audit), "its upload is kept until the verdict", upload=True)
    digest = audit.upload_sha256
    assert digest is not None  # require_ready(upload=True)
    try:
        blob = audits.blobs(state).open(digest)
    except blobs.StoreUnavailable as exc:
        raise Problem(503, "Blob store unavailable", str(exc), retry_after=10) from None
    if blob is None:
        raise Problem(503, "Upload missing", f"upload {digest} is not in this gateway's blob store "
                      "(replicas must share it: one S3 bucket, or one directory)")
    headers = {"X-Content-SHA256": digest}
    if blob.path is not None:
        return FileResponse(blob.path, media_type="application/octet-stream", headers=headers)  # from disk
    return StreamingResponse(blob.chunks(), media_type="application/octet-stream",  # from S3, piece by piece
                             headers=headers | {"Content-Length": str(blob.size)})


@router.post("/v1/audits/{audit_id}/result", operation_id="post_replay_result", response_model=AuditOut)
def post_result(audit_id: IdPath, body: ReplayResultIn, session: WriteSessionDep, state: StateDep,
                key: Annotated[ApiKey, Depends(api_key("replay"))]) -> dict:
    """A validator's signed replay verdict: it joins the provider's score and the job's settlement, and
    is appended to the log with the signature. The upload is deleted."""
    now = time.time()
    audit = _replay_audit(session, audit_id, lock=True)
    job = _job(session, audit.job_id)
    if body.validator_key not in tenancy.job_validators(session, job):
        if not tenancy.may_read_evidence(session, job, key, None):
            raise Problem(404, "Not found", f"no audit {audit_id}")
        raise Problem(403, "Forbidden", f"validator {body.validator_key} is not one the job's tenant named for "
                      "it (POST /v1/validators, then JobIn.validators)")
    result = body.model_dump()
    start, end = (_commitment(session, audit.job_id, s) for s in (audit.start_step, audit.end_step))
    fields = replay_fields(audit, start, end, result)
    try:
        signatures.verify(bytes.fromhex(body.validator_key), signatures.replay_message(fields),
                          bytes.fromhex(body.signature))
    except signatures.SignatureError as exc:
        raise Problem(401, "Bad signature", f"replay result: {exc}") from None
    if training.replay_result(audits.state_of(audit), body.signature) == "replay":
        return rolled_back(session, audit_json(audit))
    policy = training.TrainingPolicy.parse(_job(session, audit.job_id).checkpoint_policy)
    if body.mode != policy.mode:
        raise Problem(422, "Invalid request", f"the job's policy replays in {policy.mode!r} mode, not {body.mode!r}")
    audits.judge(session, state, audit, body.outcome, body.reason, now, tensor=body.tensor, chunk=body.chunk,
           distance=body.distance, tau=body.tau, mode=body.mode, judged_by=f"validator {body.validator_key[:16]}",
           validator_key=body.validator_key, signature=body.signature, api_key=key.id)
    session.flush()
    audits.release_upload(session, state, audit)
    session.commit()
    return audit_json(audit)
