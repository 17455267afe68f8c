"""Trust (public, read-only): a provider's score and its verdict history."""

from __future__ import annotations

import functools
import json
import time
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response
from gpuproof.gateway import pages, service
from gpuproof.gateway.limits import limit_ip
from gpuproof.gateway.models import Challenge as ChallengeRow
from gpuproof.gateway.models import Provider, ProviderScore
from gpuproof.gateway.problems import Problem
from gpuproof.gateway.schemas import IdPath
from gpuproof.gateway.sessions import ReadSessionDep, in_read_threads
from gpuproof.gateway.state import State, StateDep
from gpuproof.verifier.trust import score
from gpuproof.verifier.wire import TrustOut, VerdictPage
from sqlalchemy import bindparam, select

router = APIRouter(prefix="/v1/providers/{provider_id}", tags=["trust"], dependencies=[Depends(limit_ip)])
VERDICTS_CURSOR = "verdicts"  # the list a cursor pages (gateway.pages)


def _provider(session, provider_id: str) -> Provider:  # noqa: ANN001
    provider = session.get(Provider, provider_id)
    if provider is None:
        raise Problem(404, "Not found", f"no provider {provider_id}")
    return provider


# the provider, and the version of its evidence (what gateway.service.evidence_changed writes with each change):
# read on every computation of a trust answer, built once
_EVIDENCE_VERSION = (select(Provider.id, ProviderScore.computed_at, ProviderScore.evidence, ProviderScore.score,
                            ProviderScore.lower_bound)
                     .outerjoin(ProviderScore, ProviderScore.provider_id == Provider.id)
                     .where(Provider.id == bindparam("id")))


def trust_answer(state: State, provider_id: str, now: float | None = None) -> bytes:
    """The provider's trust answer as the route sends it (TrustOut as JSON) at `now` (default: now), read from
    the database now: one row when its evidence has not changed since the records held for it were read
    (gateway.trust_cache.HeldEvidence), else every verdict; Problem 404 when there is no such provider.
    Blocking: run it on a thread."""
    held = state.trust_cache.held
    with state.db.reader() as session:
        row = session.execute(_EVIDENCE_VERSION, {"id": provider_id}).first()
        if row is None:
            raise Problem(404, "Not found", f"no provider {provider_id}")
        version = tuple(row[1:])
        records = held.get(provider_id, version) if held is not None else None
        if records is None:
            records = service.verdict_records(session, provider_id)
            if held is not None:
                held.put(provider_id, version, records)
    trust = service.trust_json(score(records, time.time() if now is None else now))
    return json.dumps({"provider_id": provider_id, **trust}).encode()


@router.get("/trust", operation_id="get_trust", response_class=Response,
            responses={200: {"model": TrustOut, "description": "the trust score"}})
async def get_trust(provider_id: IdPath, state: StateDep) -> Response:
    """Score, 95% lower bound, evidence count, verified class, last verified time, and the reasons.

    Served from a short-lived cache (gateway.trust_cache.TrustCache); the database is read on a few threads of
    its own, so the event loop never waits on it.
    """
    # Most reads never get here: gateway.app.TrustFastPath answers cached ones before routing, the same way.
    cached = await state.trust_cache.get_or_compute(provider_id, functools.partial(trust_answer, state))
    return Response(content=cached, media_type="application/json")


@router.get("/verdicts", operation_id="list_verdicts", response_model=VerdictPage)
@in_read_threads(VerdictPage)
def list_verdicts(provider_id: IdPath, session: ReadSessionDep,
                  limit: Annotated[int, Query(ge=1, le=200)] = 50,
                  offset: pages.OffsetQuery = 0, cursor: pages.CursorQuery = None) -> dict:
    """The provider's verdicts, newest first (ties by challenge id, descending). Paged by `cursor` (each
    page's `next_cursor`) on the index of (provider_id, judged_at, id); `offset` stops at
    gateway.pages.MAX_OFFSET."""
    pages.check_offset(offset, cursor)
    _provider(session, provider_id)
    query = (select(ChallengeRow.id, ChallengeRow.judged_at, ChallengeRow.verdict)
             .where(ChallengeRow.provider_id == provider_id, ChallengeRow.state == "judged")
             .order_by(ChallengeRow.judged_at.desc(), ChallengeRow.id.desc()))
    if cursor is not None:
        query = query.where(pages.after((ChallengeRow.judged_at, ChallengeRow.id),
                                        pages.decode(VERDICTS_CURSOR, cursor, (float, str)), descending=True))
    rows = session.execute(query.limit(limit + 1).offset(offset)).all()
    more, rows = len(rows) > limit, rows[:limit]
    return {"items": [{"challenge_id": cid, "judged_at": at, "verdict": v} for cid, at, v in rows],
            "limit": limit, "offset": offset,
            "next_cursor": pages.encode(VERDICTS_CURSOR, (rows[-1][1], rows[-1][0])) if more else None}
