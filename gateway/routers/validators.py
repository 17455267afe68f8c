"""Validators a tenant registers (API key with scope `jobs` or `replay`): the Ed25519 public keys whose
signed replay results its jobs' audits accept, and who may read those jobs' uploads (gateway/tenancy.py)."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Response, status
from gpuproof.gateway.auth import api_key
from gpuproof.gateway.limits import limit_ip
from gpuproof.gateway.models import ApiKey, Validator
from gpuproof.gateway.problems import Problem
from gpuproof.gateway.schemas import Hex64, ValidatorIn
from gpuproof.gateway.sessions import ReadSessionDep, WriteSessionDep
from gpuproof.verifier import signatures
from gpuproof.verifier.wire import ValidatorOut
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

router = APIRouter(prefix="/v1/validators", tags=["validators"], dependencies=[Depends(limit_ip)])
TenantKey = Annotated[ApiKey, Depends(api_key("jobs", "replay"))]


def validator_out(v: Validator) -> ValidatorOut:
    return ValidatorOut(public_key=v.public_key, name=v.name, created_at=v.created_at)


@router.post("", status_code=status.HTTP_201_CREATED, operation_id="register_validator", response_model=ValidatorOut)
def register_validator(body: ValidatorIn, session: WriteSessionDep, key: TenantKey) -> ValidatorOut:
    """Register a validator for the key's tenant. New jobs name all the tenant's validators unless they
    name some (JobIn.validators). Registering the same key again renames it."""
    try:
        signatures.public_key_from_bytes(bytes.fromhex(body.public_key))
    except signatures.SignatureError as exc:
        raise Problem(422, "Invalid request", f"public_key: not an Ed25519 public key ({exc})") from None
    row = session.execute(select(Validator).where(Validator.tenant == key.tenant,
                                                  Validator.public_key == body.public_key)).scalar_one_or_none()
    if row is None:
        row = Validator(tenant=key.tenant, public_key=body.public_key, name=body.name, created_at=time.time())
        session.add(row)
    row.name = body.name
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise Problem(409, "Conflict", "this validator was registered at the same time; retry") from None
    answer = validator_out(row)
    session.commit()
    return answer


@router.get("", operation_id="list_validators", response_model=list[ValidatorOut])
def list_validators(session: ReadSessionDep, key: TenantKey) -> list[ValidatorOut]:
    """The key's tenant's validators, oldest first."""
    rows = session.execute(select(Validator).where(Validator.tenant == key.tenant).order_by(Validator.id)).scalars()
    return [validator_out(v) for v in rows]


@router.delete("/{public_key}", status_code=status.HTTP_204_NO_CONTENT, operation_id="delete_validator",
               response_class=Response)
def delete_validator(public_key: Hex64, session: WriteSessionDep, key: TenantKey) -> Response:
    """Forget a validator: jobs that named it no longer accept its results or let it read their uploads
    (a job's named keys are checked against the tenant's registered ones when used)."""
    row = session.execute(select(Validator).where(Validator.tenant == key.tenant,
                                                  Validator.public_key == public_key)).scalar_one_or_none()
    if row is None:
        raise Problem(404, "Not found", f"no validator {public_key}")
    session.delete(row)
    session.commit()
    return Response(status_code=204)
