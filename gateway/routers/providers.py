"""Providers: register (signed by the key: proof of possession), update (a request signed by the key), list, get."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response, status
from gpuproof.gateway import pages, service, translog
from gpuproof.gateway.auth import (
    VERSION_HEADER_DOC,
    SignedProviderDep,
    check_signature_headers,
    raw_body,
    verify_request,
)
from gpuproof.gateway.limits import limit_ip, source_of
from gpuproof.gateway.models import Challenge, Device, Provider, ProviderScore
from gpuproof.gateway.problems import Problem
from gpuproof.gateway.schemas import IdPath, Registration, RegistrationUpdate
from gpuproof.gateway.sessions import ReadSessionDep, WriteSessionDep, in_read_threads
from gpuproof.gateway.state import State, StateDep
from gpuproof.verifier import signatures
from gpuproof.verifier.profiles import Profile, lookup
from gpuproof.verifier.trust import score
from gpuproof.verifier.wire import DeviceOut, ProviderOut, ProviderPage, TrustScoreOut
from pydantic import TypeAdapter
from sqlalchemy import bindparam, select

router = APIRouter(prefix="/v1/providers", tags=["providers"], dependencies=[Depends(limit_ip)])
PROVIDERS_CURSOR = "providers"  # the lists a cursor pages (gateway.pages): by registration,
BOUND_CURSOR = "providers-by-lower-bound"  # and by the stored lower bound (with min_lower_bound)


def devices_json(reg: Registration | RegistrationUpdate) -> str:
    """The devices as the log records them (canonical JSON of the parsed claims; never what is signed)."""
    return json.dumps([d.model_dump() for d in reg.devices], sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class RegistrationHeaders:
    timestamp: int
    nonce: str
    signature: bytes
    provider_id: str | None


def registration_headers(request: Request, state: StateDep,
                         x_gpuproof_provider: Annotated[str | None, Header()] = None,
                         x_gpuproof_timestamp: Annotated[str | None, Header()] = None,
                         x_gpuproof_nonce: Annotated[str | None, Header()] = None,
                         x_gpuproof_signature: Annotated[str | None, Header()] = None,
                         x_gpuproof_signature_version: Annotated[str | None, Header(description=VERSION_HEADER_DOC)]
                         = None) -> RegistrationHeaders:
    """A registration's signature headers, checked before its body is (so an agent older than signature
    version 2, which signed the gateway's re-serialisation of its devices in the body, is told to upgrade)."""
    if x_gpuproof_signature is None and x_gpuproof_signature_version is None:
        raise Problem(401, "Signature version not accepted", "a registration is a signed request (signature "
                      "version 2: X-Gpuproof-Signature-Version, -Timestamp, -Nonce and -Signature over the body as "
                      "sent; docs/gateway.md, \"Authentication\"); a signature in the body is version 1: upgrade "
                      "the agent or client")
    timestamp, signature, _ = check_signature_headers(request, state, x_gpuproof_timestamp, x_gpuproof_nonce,
                                                      x_gpuproof_signature)
    assert x_gpuproof_nonce is not None  # checked above
    return RegistrationHeaders(timestamp, x_gpuproof_nonce, signature, x_gpuproof_provider)


def provider_out(session, provider: Provider, now: float, profiles: Mapping[str, Profile],  # noqa: ANN001
                 with_trust: bool = True) -> ProviderOut:
    return provider_outs(session, [provider], now, profiles, with_trust)[0]


DEVICES_OF = (select(Device).where(Device.provider_id.in_(bindparam("ids", expanding=True)))
              .order_by(Device.provider_id, Device.position))  # built once (a statement per call costs its build)


def provider_outs(session, providers: Sequence[Provider], now: float,  # noqa: ANN001
                  profiles: Mapping[str, Profile], with_trust: bool = True) -> list[ProviderOut]:
    """The providers as the API shows them: their devices, verified classes and trust, read for all of
    them at once (a page costs a fixed number of queries, not a few per row)."""
    ids = [p.id for p in providers]
    devices: dict[str, list[Device]] = {pid: [] for pid in ids}
    if ids:
        for d in session.execute(DEVICES_OF, {"ids": ids}).scalars():
            devices[d.provider_id].append(d)
    trusts = service.trusts_of(session, ids, now) if with_trust else {}
    verified = service.verified_classes_of(session, ids, now, profiles)
    return [ProviderOut(id=p.id, name=p.name, public_key=p.public_key.hex(), created_at=p.created_at,
                        devices=[DeviceOut(position=d.position, model=d.model, count=d.count, vram_gib=d.vram_gib,
                                           claimed_profile=d.profile, verified_class=verified[p.id].get(d.id))
                                 for d in devices[p.id]],
                        trust=TrustScoreOut(**service.trust_json(trusts[p.id])) if p.id in trusts else None)
            for p in providers]


def limit_registrations(request: Request, state: StateDep) -> None:
    """A registration costs a signature check, a write and a listed identity, and a key costs nothing to
    make: each client address has GPUPROOF_REGISTRATIONS_PER_IP_PER_HOUR (also its burst), and the gateway
    GPUPROOF_REGISTRATIONS_PER_S_GLOBAL (burst twice that) whoever sends them; beyond either, 429 with
    Retry-After, before the body's signature is checked."""
    settings, ip = state.settings, source_of(request)  # an IPv6 client's /64
    per_hour, per_s = settings.registrations_per_ip_per_hour, settings.registrations_per_s_global
    wait = state.limiter.take(f"register-ip:{ip}", per_hour / 3600, per_hour)
    if wait is not None:
        raise Problem(429, "Too many registrations", f"more than {per_hour:g} registrations an hour from this "
                      "address", retry_after=max(1, round(wait + 0.5)))
    wait = state.limiter.take("register-all", per_s, 2 * per_s)
    if wait is not None:
        raise Problem(429, "Too many registrations", f"the gateway takes at most {per_s:g} registrations a "
                      "second", retry_after=max(1, round(wait + 0.5)))


@router.post("", status_code=status.HTTP_201_CREATED, operation_id="register_provider",
             response_model=ProviderOut, dependencies=[Depends(limit_registrations)])
def register_provider(body: Registration, request: Request, session: WriteSessionDep, state: StateDep,
                      signed: Annotated[RegistrationHeaders, Depends(registration_headers)],
                      raw: Annotated[bytes, Depends(raw_body)]) -> ProviderOut:
    """Register a provider: a request signed (version 2, over the exact body bytes) by the Ed25519 key the
    body names (proof of possession)."""
    public_key = bytes.fromhex(body.public_key)
    pid = signatures.provider_id(public_key)
    if signed.provider_id is not None and signed.provider_id != pid:
        raise Problem(401, "Unauthenticated", f"X-Gpuproof-Provider is {signed.provider_id[:40]!r}, but the body's "
                      f"public key makes the provider id {pid}")
    verify_request(request, state, public_key, signed.timestamp, signed.nonce, signed.signature,
                   hashlib.sha256(raw).hexdigest())
    now = time.time()
    existing = session.get(Provider, pid)
    if existing is not None:
        raise Problem(409, "Already registered", f"provider {pid} is already registered with this key; to change "
                      f"its name or devices, PUT /v1/providers/{pid} signed by it (`gpuproof agent register "
                      "--update`)")
    session.add(Provider(id=pid, public_key=public_key, name=body.name, created_at=now, source=source_of(request)))
    session.flush()
    fresh = score([], now)  # no evidence yet: unproven
    session.add(ProviderScore(provider_id=pid, score=fresh.score, lower_bound=fresh.lower_bound, evidence=0,
                              status=fresh.status, computed_at=now))
    for i, d in enumerate(body.devices):
        session.add(Device(provider_id=pid, position=i, model=d.model, count=d.count, vram_gib=d.vram_gib,
                           profile=lookup(d.model, state.verifier.profiles).key, next_due_at=0.0,
                           **service.unverified(now)))
    translog.append(session, "registration", {"provider_id": pid, "public_key": body.public_key,
                                              "name": body.name, "devices": json.loads(devices_json(body))}, now)
    session.commit()
    with state.db.reader() as reader:  # the answer is read without the write lock
        provider = reader.get(Provider, pid)
        assert provider is not None
        return provider_out(reader, provider, now, state.verifier.profiles)


@router.put("/{provider_id}", operation_id="update_provider", response_model=ProviderOut)
def update_provider(provider_id: IdPath, body: RegistrationUpdate, auth: SignedProviderDep,
                    state: StateDep) -> ProviderOut:
    """Change a registered provider's name and devices: a request signed by the provider's own key.

    Devices are matched by position. A changed claim is profiled anew and, if its model changed, challenged
    at its next poll; a new position is added; a position left out is removed, unless it has challenges on
    record (409: that evidence stays tied to it; change its claim instead). Logged as `registration-update`.
    """
    session = auth.session
    if provider_id != auth.provider.id:
        raise Problem(403, "Forbidden", "a provider can only update its own registration")
    auth.claim_nonce()
    provider = session.get(Provider, provider_id)
    assert provider is not None  # the signature check found it
    devices = {d.position: d for d in session.execute(select(Device).where(Device.provider_id == provider_id))
               .scalars()}
    for position, device in sorted(devices.items()):
        if position < len(body.devices):
            continue
        if session.execute(select(Challenge.id).where(Challenge.device_id == device.id).limit(1)).first():
            raise Problem(409, "Device has evidence", f"device {position} ({device.model}) has challenges on record "
                          f"and cannot be removed; keep {len(devices)} devices or more (a claim may change)")
        session.delete(device)
    for i, claim in enumerate(body.devices):
        profile = lookup(claim.model, state.verifier.profiles).key
        current = devices.get(i)
        if current is None:
            session.add(Device(provider_id=provider_id, position=i, model=claim.model, count=claim.count,
                               vram_gib=claim.vram_gib, profile=profile, next_due_at=0.0,
                               **service.unverified(time.time())))
            continue
        if current.model != claim.model:
            current.next_due_at = 0.0  # a new claim is checked at once
        current.model, current.count, current.vram_gib, current.profile = claim.model, claim.count, claim.vram_gib, \
            profile
    provider.name = body.name
    translog.append(session, "registration-update", {"provider_id": provider_id, "name": body.name,
                                                     "devices": json.loads(devices_json(body))}, auth.now)
    session.commit()
    state.trust_cache.drop(provider_id)
    with state.db.reader() as reader:
        updated = reader.get(Provider, provider_id)
        assert updated is not None
        return provider_out(reader, updated, auth.now, state.verifier.profiles)


PAGE_JSON = TypeAdapter(ProviderPage)


@router.get("", operation_id="list_providers", response_model=ProviderPage)
async def list_providers(state: StateDep,
                         model: Annotated[str | None, Query(max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")] = None,
                         min_lower_bound: Annotated[float | None, Query(ge=0, le=1)] = None,
                         limit: Annotated[int, Query(ge=1, le=200)] = 50,
                         offset: pages.OffsetQuery = 0, cursor: pages.CursorQuery = None) -> Response:
    """Providers, optionally those with a device *verified* as a model's class (its recent passes match that
    profile: a claim alone never lists a provider) and a minimum lower bound. In registration order; with
    `min_lower_bound`, by the stored lower bound, highest first (so that a page is a range scan of that
    index however few or many providers pass the bound). Ties by id. Paged by `cursor` (each page's
    `next_cursor`); `offset` stops at gateway.pages.MAX_OFFSET and `total` counts at most
    gateway.pages.COUNT_CAP rows.

    A page is kept for GPUPROOF_PAGE_CACHE_S (0.5 s) for every reader of the same page and re-read in the
    background meanwhile (the dashboard's cache, gateway.trust_cache.TrustCache), as scores are."""
    pages.check_offset(offset, cursor)
    key = json.dumps(["providers", model, min_lower_bound, limit, offset, cursor])

    def read(_: str) -> bytes:
        with state.db.reader() as session:
            page = provider_page(session, state, model, min_lower_bound, limit, offset, cursor)
            return PAGE_JSON.dump_json(page, by_alias=True)

    return Response(await state.page_cache.get_or_compute(key, read), media_type="application/json")


def provider_page(session, state: State, model: str | None, min_lower_bound: float | None,  # noqa: ANN001
                  limit: int, offset: int, cursor: str | None) -> ProviderPage:
    """One page of list_providers, read now."""
    query = select(Provider)
    now = time.time()
    if model:  # by the devices' stored classes (service.store_verified): a page's worth, not every recent pass
        profile = lookup(model, state.verifier.profiles).key
        query = query.where(Provider.id.in_(select(Device.provider_id).where(Device.verified_class == profile,
                                                                            Device.verified_until > now)))
    if min_lower_bound is None:
        kind, keys, descending = PROVIDERS_CURSOR, (Provider.created_at, Provider.id), False
    else:  # by the stored score (models.ProviderScore), not computed per provider
        query = query.join(ProviderScore, ProviderScore.provider_id == Provider.id).where(
            ProviderScore.lower_bound >= min_lower_bound)
        kind, keys, descending = BOUND_CURSOR, (ProviderScore.lower_bound, ProviderScore.provider_id), True
    total, exact = state.totals.get(("providers", model or "", min_lower_bound), session, query, Provider.id)
    if cursor is not None:
        query = query.where(pages.after(keys, pages.decode(kind, cursor, (float, str)), descending=descending))
    query = query.add_columns(keys[0]).order_by(*((k.desc() for k in keys) if descending else keys))
    found: list[Any] = list(session.execute(query.limit(limit + 1).offset(offset)).all())  # (provider, key)
    more, found = len(found) > limit, found[:limit]
    items = provider_outs(session, [p for p, _ in found], now, state.verifier.profiles)
    next_cursor = pages.encode(kind, (found[-1][1], found[-1][0].id)) if more else None
    return ProviderPage(items=items, total=total, total_exact=exact, limit=limit, offset=offset,
                        next_cursor=next_cursor)


@router.get("/{provider_id}", operation_id="get_provider", response_model=ProviderOut)
@in_read_threads(ProviderOut)
def get_provider(provider_id: IdPath, session: ReadSessionDep, state: StateDep) -> ProviderOut:
    """One provider: claimed devices with their profile, the verified class, and the trust score."""
    provider = session.get(Provider, provider_id)
    if provider is None:
        raise Problem(404, "Not found", f"no provider {provider_id}")
    return provider_out(session, provider, time.time(), state.verifier.profiles)
