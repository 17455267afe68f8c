"""Providers: register (signed by the key: proof of possession), list, get."""

from __future__ import annotations

import json
import time
from typing import Annotated

from fastapi import APIRouter, Depends, Query, status
from sqlalchemy import func, select

from gateway import service, translog
from gateway.deps import ReadSessionDep, StateDep, WriteSessionDep, limit_ip
from gateway.models import Device, Provider
from gateway.problems import Problem
from gateway.schemas import MAX_INDEX, DeviceOut, IdPath, ProviderOut, ProviderPage, Registration
from verifier import signatures
from verifier.profiles import lookup

router = APIRouter(prefix="/v1/providers", tags=["providers"], dependencies=[Depends(limit_ip)])


def devices_json(reg: Registration) -> str:
    return json.dumps([d.model_dump() for d in reg.devices], sort_keys=True, separators=(",", ":"))


def provider_out(session, provider: Provider, now: float, with_trust: bool = True) -> ProviderOut:  # noqa: ANN001
    devices = session.execute(select(Device).where(Device.provider_id == provider.id)
                              .order_by(Device.position)).scalars().all()
    trust = service.trust_of(session, provider.id, now) if with_trust else None
    verified = service.verified_classes(session, provider.id, now)
    return ProviderOut(id=provider.id, name=provider.name, public_key=provider.public_key.hex(),
                       created_at=provider.created_at,
                       devices=[DeviceOut(position=d.position, model=d.model, count=d.count, vram_gib=d.vram_gib,
                                          claimed_profile=d.profile, verified_class=verified.get(d.id))
                                for d in devices],
                       trust=service.trust_json(trust) if trust else None)


@router.post("", status_code=status.HTTP_201_CREATED, operation_id="register_provider",
             response_model=ProviderOut)
def register_provider(body: Registration, session: WriteSessionDep, state: StateDep) -> ProviderOut:
    """Register a provider. The registration is signed by its own Ed25519 key (proof of possession)."""
    public_key = bytes.fromhex(body.public_key)
    try:
        signatures.verify(public_key, signatures.registration_message(public_key, body.name, devices_json(body)),
                          bytes.fromhex(body.signature))
    except signatures.SignatureError as exc:
        raise Problem(401, "Bad signature", f"signature: {exc}") from None
    pid = signatures.provider_id(public_key)
    now = time.time()
    existing = session.get(Provider, pid)
    if existing is not None:
        raise Problem(409, "Already registered", f"provider {pid} is already registered with this key")
    session.add(Provider(id=pid, public_key=public_key, name=body.name, created_at=now))
    session.flush()
    for i, d in enumerate(body.devices):
        session.add(Device(provider_id=pid, position=i, model=d.model, count=d.count, vram_gib=d.vram_gib,
                           profile=lookup(d.model, state.verifier.profiles).key, next_due_at=0.0))
    translog.append(session, "registration", {"provider_id": pid, "public_key": body.public_key,
                                              "name": body.name, "devices": json.loads(devices_json(body))}, now)
    session.commit()
    with state.db.reader() as reader:  # the answer is read without the write lock
        provider = reader.get(Provider, pid)
        assert provider is not None
        return provider_out(reader, provider, now)


@router.get("", operation_id="list_providers", response_model=ProviderPage)
def list_providers(session: ReadSessionDep, state: StateDep,
                   model: Annotated[str | None, Query(max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")] = None,
                   min_lower_bound: Annotated[float | None, Query(ge=0, le=1)] = None,
                   limit: Annotated[int, Query(ge=1, le=200)] = 50,
                   offset: Annotated[int, Query(ge=0, le=MAX_INDEX)] = 0) -> ProviderPage:
    """Providers, optionally those with a device of a model (or its profile) and a minimum lower bound."""
    query = select(Provider).order_by(Provider.created_at, Provider.id)
    if model:
        profile = lookup(model, state.verifier.profiles).key
        sub = select(Device.provider_id).where((Device.model == model) | (Device.profile == profile))
        query = query.where(Provider.id.in_(sub))
    now = time.time()
    if min_lower_bound is None:
        total = session.execute(select(func.count()).select_from(query.subquery())).scalar_one()
        rows = session.execute(query.limit(limit).offset(offset)).scalars().all()
        items = [provider_out(session, p, now) for p in rows]
    else:
        everyone = [provider_out(session, p, now) for p in session.execute(query).scalars()]
        matching = [p for p in everyone if p.trust and p.trust["lower_bound"] >= min_lower_bound]
        total, items = len(matching), matching[offset:offset + limit]
    return ProviderPage(items=items, total=total, limit=limit, offset=offset)


@router.get("/{provider_id}", operation_id="get_provider", response_model=ProviderOut)
def get_provider(provider_id: IdPath, session: ReadSessionDep) -> ProviderOut:
    """One provider: claimed devices with their profile, the verified class, and the trust score."""
    provider = session.get(Provider, provider_id)
    if provider is None:
        raise Problem(404, "Not found", f"no provider {provider_id}")
    return provider_out(session, provider, time.time())
