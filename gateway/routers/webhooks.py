"""Webhook endpoints of a tenant (API key with scope `jobs`): register, list, read, delete; each endpoint's
delivery log and redelivery. Another tenant's endpoint or delivery answers 404, as one that does not exist.
Delivery itself is gateway/webhooks.py; the payloads and signature are verifier/webhooks.py."""

from __future__ import annotations

import hmac
import json
import secrets
import time
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Response, status
from gpuproof.gateway import webhooks
from gpuproof.gateway.auth import api_key
from gpuproof.gateway.db import locked, take_turns
from gpuproof.gateway.limits import limit_ip
from gpuproof.gateway.models import ApiKey, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from gpuproof.gateway.problems import Problem
from gpuproof.gateway.schemas import (
    MAX_INDEX,
    IdPath,
    WebhookAttemptOut,
    WebhookDeliveryDetail,
    WebhookDeliveryOut,
    WebhookDeliveryPage,
    WebhookEndpointCreated,
    WebhookEndpointIn,
    WebhookEndpointOut,
    WebhookSecretRotated,
    WebhookSecretRotation,
)
from gpuproof.gateway.sessions import ReadSessionDep, WriteSessionDep
from gpuproof.gateway.state import StateDep
from gpuproof.verifier import webhooks as spec
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"], dependencies=[Depends(limit_ip)])
TenantKey = Annotated[ApiKey, Depends(api_key("jobs"))]


def endpoint_out(e: WebhookEndpoint) -> WebhookEndpointOut:
    return WebhookEndpointOut(id=e.id, url=e.url, events=list(e.events), description=e.description,
                              created_at=e.created_at)


def delivery_fields(d: WebhookDelivery) -> dict:
    return {"id": d.id, "endpoint_id": d.endpoint_id, "event_type": d.event_type, "state": d.state,
            "created_at": d.created_at, "attempts": d.attempts, "next_attempt_at": d.next_attempt_at,
            "last_attempt_at": d.last_attempt_at, "last_status": d.last_status, "last_error": d.last_error,
            "delivered_at": d.delivered_at}


def delivery_detail(session: Session, d: WebhookDelivery) -> WebhookDeliveryDetail:
    history = session.execute(select(WebhookAttempt).where(WebhookAttempt.delivery_id == d.id)
                              .order_by(WebhookAttempt.id)).scalars()
    return WebhookDeliveryDetail(**delivery_fields(d), payload=json.loads(d.body),
                                 history=[WebhookAttemptOut(at=a.at, status=a.status, error=a.error,
                                                            duration_s=a.duration_s) for a in history])


def tenant_endpoint(session: Session, endpoint_id: str, key: ApiKey, lock: bool = False) -> WebhookEndpoint:
    """The endpoint if `key`'s tenant registered it, else 404 (the same answer as for none at all)."""
    row = locked(session, WebhookEndpoint, endpoint_id) if lock else session.get(WebhookEndpoint, endpoint_id)
    if row is None or not hmac.compare_digest(row.tenant.encode(), key.tenant.encode()):
        raise Problem(404, "Not found", f"no webhook endpoint {endpoint_id}")
    return row


def endpoint_delivery(session: Session, endpoint: WebhookEndpoint, delivery_id: str,
                      lock: bool = False) -> WebhookDelivery:
    row = locked(session, WebhookDelivery, delivery_id) if lock else session.get(WebhookDelivery, delivery_id)
    if row is None or row.endpoint_id != endpoint.id:
        raise Problem(404, "Not found", f"no delivery {delivery_id} to webhook endpoint {endpoint.id}")
    return row


@router.post("", status_code=status.HTTP_201_CREATED, operation_id="create_webhook_endpoint")
def create_endpoint(body: WebhookEndpointIn, session: WriteSessionDep, state: StateDep,
                    key: TenantKey) -> WebhookEndpointCreated:
    """Register an endpoint for the key's tenant: `url` (http or https), `events` (any of verdict,
    settlement, trust) and an optional `description`. The answer carries the signing `secret`, shown only
    now. A tenant has at most GPUPROOF_WEBHOOK_MAX_ENDPOINTS (10) endpoints: 409 beyond. A URL whose host
    resolves to a loopback, private or link-local address is refused (422) unless
    GPUPROOF_WEBHOOK_ALLOW_PRIVATE is set; its name is resolved again, and checked, at every attempt."""
    try:  # before the first statement: no write lock is held while the name resolves
        webhooks.check_endpoint_url(body.url, state.settings)
    except spec.WebhookError as exc:
        raise Problem(422, "Endpoint refused", str(exc)) from None
    limit = state.settings.webhook_max_endpoints
    lock_tenant(session, key.tenant)  # two registrations at once must not both pass the count
    have = session.scalar(select(func.count()).select_from(WebhookEndpoint).where(WebhookEndpoint.tenant == key.tenant))
    if (have or 0) >= limit:
        raise Problem(409, "Too many endpoints", f"this tenant has {have} webhook endpoints, the most it may have "
                      f"is {limit}; delete one first")
    row = WebhookEndpoint(id=secrets.token_hex(16), tenant=key.tenant, url=body.url, events=body.events,
                          description=body.description, secret=spec.new_secret(), created_at=time.time())
    session.add(row)
    answer = WebhookEndpointCreated(**endpoint_out(row).model_dump(), secret=row.secret)
    session.commit()
    return answer


def lock_tenant(session: Session, tenant: str) -> None:
    """Hold the tenant's endpoint registrations to one at a time until the transaction ends. PostgreSQL: a
    transaction-scoped advisory lock on the tenant's name (no tenant row to lock); SQLite's write
    transactions already run one at a time."""
    take_turns(session, ADVISORY_WEBHOOK_TENANT, tenant)


ADVISORY_WEBHOOK_TENANT = 0x77656268  # the advisory lock space of webhook registrations ("wbh")


@router.post("/{endpoint_id}/secret", operation_id="rotate_webhook_secret")
def rotate_secret(endpoint_id: IdPath, session: WriteSessionDep, state: StateDep, key: TenantKey,
                  body: WebhookSecretRotation | None = None) -> WebhookSecretRotated:
    """Give an endpoint a new secret, shown only in this answer. Deliveries are signed with the new secret
    and, for `overlap_s` more seconds (default GPUPROOF_WEBHOOK_SECRET_OVERLAP_S, a day), with the previous
    one too (two `v1,` signatures in `webhook-signature`), so the receiver can switch over without losing
    one. Only one previous secret is kept: rotating again ends the older one's overlap at once."""
    row = tenant_endpoint(session, endpoint_id, key, lock=True)
    now = time.time()
    overlap = state.settings.webhook_secret_overlap_s if body is None or body.overlap_s is None else body.overlap_s
    row.previous_secret, row.previous_until = (row.secret, now + overlap) if overlap > 0 else (None, None)
    row.secret = spec.new_secret()
    answer = WebhookSecretRotated(secret=row.secret, previous_valid_until=row.previous_until)
    session.commit()
    return answer


@router.get("", operation_id="list_webhook_endpoints")
def list_endpoints(session: ReadSessionDep, key: TenantKey) -> list[WebhookEndpointOut]:
    """The key's tenant's endpoints, oldest first (never their secrets)."""
    rows = session.execute(select(WebhookEndpoint).where(WebhookEndpoint.tenant == key.tenant)
                           .order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)).scalars()
    return [endpoint_out(e) for e in rows]


@router.get("/{endpoint_id}", operation_id="get_webhook_endpoint")
def get_endpoint(endpoint_id: IdPath, session: ReadSessionDep, key: TenantKey) -> WebhookEndpointOut:
    """One of the tenant's endpoints (another tenant's: 404)."""
    return endpoint_out(tenant_endpoint(session, endpoint_id, key))


@router.delete("/{endpoint_id}", status_code=status.HTTP_204_NO_CONTENT, operation_id="delete_webhook_endpoint",
               response_class=Response)
def delete_endpoint(endpoint_id: IdPath, session: WriteSessionDep, key: TenantKey) -> Response:
    """Delete an endpoint with its delivery log; nothing more is sent to it (an attempt in flight ends)."""
    row = tenant_endpoint(session, endpoint_id, key, lock=True)
    deliveries = select(WebhookDelivery.id).where(WebhookDelivery.endpoint_id == row.id)
    session.execute(delete(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(deliveries)))
    session.execute(delete(WebhookDelivery).where(WebhookDelivery.endpoint_id == row.id))
    session.delete(row)
    session.commit()
    return Response(status_code=204)


@router.get("/{endpoint_id}/deliveries", operation_id="list_webhook_deliveries")
def list_deliveries(endpoint_id: IdPath, session: ReadSessionDep, key: TenantKey,
                    state: Annotated[Literal["pending", "delivered", "failed"] | None, Query()] = None,
                    limit: Annotated[int, Query(ge=1, le=200)] = 50,
                    offset: Annotated[int, Query(ge=0, le=MAX_INDEX)] = 0) -> WebhookDeliveryPage:
    """The endpoint's delivery log, newest first: each event's state, attempts and last result."""
    endpoint = tenant_endpoint(session, endpoint_id, key)
    where = [WebhookDelivery.endpoint_id == endpoint.id] + ([WebhookDelivery.state == state] if state else [])
    total = session.scalar(select(func.count()).select_from(WebhookDelivery).where(*where)) or 0
    rows = session.execute(select(WebhookDelivery).where(*where)
                           .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id)
                           .limit(limit).offset(offset)).scalars()
    return WebhookDeliveryPage(items=[WebhookDeliveryOut(**delivery_fields(d)) for d in rows], total=total,
                               limit=limit, offset=offset)


@router.get("/{endpoint_id}/deliveries/{delivery_id}", operation_id="get_webhook_delivery")
def get_delivery(endpoint_id: IdPath, delivery_id: IdPath, session: ReadSessionDep,
                 key: TenantKey) -> WebhookDeliveryDetail:
    """One delivery: the payload sent and every attempt (when, HTTP status, error, duration)."""
    endpoint = tenant_endpoint(session, endpoint_id, key)
    return delivery_detail(session, endpoint_delivery(session, endpoint, delivery_id))


@router.post("/{endpoint_id}/deliveries/{delivery_id}/redeliver", status_code=status.HTTP_202_ACCEPTED,
             operation_id="redeliver_webhook")
def redeliver(endpoint_id: IdPath, delivery_id: IdPath, session: WriteSessionDep,
              key: TenantKey) -> WebhookDeliveryOut:
    """Send a delivery again, whatever its state, with the same `webhook-id` and body (a new timestamp and
    signature) and a fresh set of attempts; due at once."""
    endpoint = tenant_endpoint(session, endpoint_id, key)
    delivery = endpoint_delivery(session, endpoint, delivery_id, lock=True)
    webhooks.redeliver(session, delivery, time.time())
    answer = WebhookDeliveryOut(**delivery_fields(delivery))
    session.commit()
    return answer
