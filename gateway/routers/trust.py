"""Trust (public, read-only): a provider's score and its verdict history."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from sqlalchemy import select

from gateway import service
from gateway.deps import ReadSessionDep, limit_ip
from gateway.models import Challenge as ChallengeRow
from gateway.models import Provider
from gateway.problems import Problem

router = APIRouter(prefix="/v1/providers/{provider_id}", tags=["trust"], dependencies=[Depends(limit_ip)])


def _provider(session, provider_id: str) -> Provider:  # noqa: ANN001
    provider = session.get(Provider, provider_id)
    if provider is None:
        raise Problem(404, "Not found", f"no provider {provider_id}")
    return provider


@router.get("/trust", operation_id="get_trust")
def get_trust(provider_id: str, session: ReadSessionDep) -> dict:
    """Score, 95% lower bound, evidence count, verified class, last verified time, and the reasons."""
    _provider(session, provider_id)
    return {"provider_id": provider_id, **service.trust_json(service.trust_of(session, provider_id, time.time()))}


@router.get("/verdicts", operation_id="list_verdicts")
def list_verdicts(provider_id: str, session: ReadSessionDep,
                  limit: Annotated[int, Query(ge=1, le=200)] = 50,
                  offset: Annotated[int, Query(ge=0)] = 0) -> dict:
    """The provider's verdicts, newest first."""
    _provider(session, provider_id)
    rows = session.execute(select(ChallengeRow.id, ChallengeRow.judged_at, ChallengeRow.verdict)
                           .where(ChallengeRow.provider_id == provider_id, ChallengeRow.state == "judged")
                           .order_by(ChallengeRow.judged_at.desc()).limit(limit).offset(offset)).all()
    return {"items": [{"challenge_id": cid, "judged_at": at, "verdict": v} for cid, at, v in rows],
            "limit": limit, "offset": offset}
