"""Tenancy (issue 18): every API key acts for one tenant (a marketplace); a job belongs to the tenant whose
key created it, and names the validators (Ed25519 public keys the tenant registered) that may read its
uploads and judge its audits. Another tenant's job answers 404, as a job that does not exist: its
existence is not revealed."""

from __future__ import annotations

import hashlib
import hmac

from fastapi import Request
from gpuproof.gateway import auth
from gpuproof.gateway.db import locked
from gpuproof.gateway.models import ApiKey, Job, Validator, ValidatorNonce
from gpuproof.gateway.problems import Problem
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

VALIDATOR_HEADER = "X-Gpuproof-Validator"


def tenant_job(session: Session, job_id: str, key: ApiKey, lock: bool = False) -> Job:
    """The job if `key`'s tenant created it, else 404 (the same answer as for no job at all)."""
    job = locked(session, Job, job_id) if lock else session.get(Job, job_id)
    if job is None or job.tenant is None or not hmac.compare_digest(job.tenant.encode(), key.tenant.encode()):
        raise Problem(404, "Not found", f"no job {job_id}")
    return job


def registered_validators(session: Session, tenant: str) -> list[str]:
    """The public keys (hex) `tenant` registered, oldest first."""
    return list(session.execute(select(Validator.public_key).where(Validator.tenant == tenant)
                                .order_by(Validator.id)).scalars())


def job_validators(session: Session, job: Job) -> list[str]:
    """The validators the job names (those given when it was created; a job created before tenancy names
    all its tenant's) that its tenant still has registered: deleting a validator revokes it everywhere."""
    registered = registered_validators(session, job.tenant) if job.tenant else []
    return registered if job.validators is None else [v for v in job.validators if v in registered]


def signing_validator(request: Request) -> str | None:
    """The validator public key (hex) that signed this request, or None when it carries no validator
    signature. Headers: X-Gpuproof-Validator (public key hex), X-Gpuproof-Timestamp, X-Gpuproof-Nonce and
    X-Gpuproof-Signature (and -Version) over verifier.signatures.request_message of the request (a GET: empty body),
    within the gateway's timestamp window. Its nonce is stored (ValidatorNonce, in a write transaction of
    its own): a replay of the signed request, by anyone who saw it, is refused 409 (issue 18)."""
    public_hex = request.headers.get(VALIDATOR_HEADER)
    if public_hex is None:
        return None
    state = request.app.state.gp
    timestamp, signature, now = auth.check_signature_headers(
        request, state, request.headers.get("X-Gpuproof-Timestamp"), request.headers.get("X-Gpuproof-Nonce"),
        request.headers.get("X-Gpuproof-Signature"))
    try:
        public = bytes.fromhex(public_hex)
    except ValueError:
        public = b""
    if len(public) != 32:
        raise Problem(401, "Unauthenticated", f"{VALIDATOR_HEADER}: expected a 32-byte Ed25519 public key (hex)")
    nonce = request.headers["X-Gpuproof-Nonce"]
    auth.verify_request(request, state, public, timestamp, nonce, signature, hashlib.sha256(b"").hexdigest())
    _claim(state, public.hex(), nonce, now)
    return public.hex()


def _claim(state, validator: str, nonce: str, now: float) -> None:  # noqa: ANN001
    """Store a validator request's nonce; 409 if it was stored already (a replayed request)."""
    with state.db.writer() as session:
        if session.get(ValidatorNonce, (validator, nonce)) is None:
            session.add(ValidatorNonce(validator_key=validator, nonce=nonce, seen_at=now))
            try:
                session.commit()
                return
            except IntegrityError:
                session.rollback()
    raise Problem(409, "Replayed request", f"nonce {nonce} was already used by this validator")


def may_read_evidence(session: Session, job: Job, key: ApiKey, validator: str | None) -> bool:
    """A job's uploads and replay materials are for its tenant's keys and the validators it names."""
    if job.tenant is not None and hmac.compare_digest(job.tenant.encode(), key.tenant.encode()):
        return True
    return validator is not None and validator in job_validators(session, job)


def renter_commitment(job: Job) -> str | None:
    """SHA-256 (hex) of the job's private salt and its renter_ref: public log entries carry this, never the
    reference; the marketplace, which knows both, can show a renter which entry is theirs."""
    if job.renter_salt is None:
        return None
    return hashlib.sha256(bytes.fromhex(job.renter_salt) + job.renter_ref.encode()).hexdigest()
