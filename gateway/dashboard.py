"""The dashboard: plain server-rendered HTML (Jinja2, autoescaped), no JavaScript, no build step.

/                       providers: sortable (?sort=&order=), filter by model (?model=), the log's head
/providers/{id}         score and its 95% lower bound over time (an inline SVG chart), devices, recent
                        challenge verdicts and training audits with their reasons
/challenges/{id}        one challenge: sizes, timing, opened rows, the verdict and its reasons
/log                    the signed tree head and the latest entries

Everything a provider controls (its name, device models, verdict texts that quote them) goes through
Jinja2's autoescaping; tests/gateway/test_dashboard.py and the browser test feed it HTML and script.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import select

from gateway import service, translog
from gateway.deps import ReadSessionDep, StateDep, limit_ip
from gateway.models import Challenge as ChallengeRow
from gateway.models import Device, Job, LogEntry, Provider, SegmentAudit
from gateway.problems import Problem
from gateway.schemas import NO_CONTROL, IdPath
from verifier.trust import score

router = APIRouter(include_in_schema=False, dependencies=[Depends(limit_ip)])
_env = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                   autoescape=select_autoescape(["html"], default=True), trim_blocks=True, lstrip_blocks=True)
_env.filters["when"] = lambda t: time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) if t else "-"
_env.filters["pct"] = lambda v: "-" if v is None else f"{v:.3f}"

SORTS = {"name": lambda p: p["name"].lower(), "score": lambda p: p["score"], "lower": lambda p: p["lower_bound"],
         "evidence": lambda p: p["evidence"], "created": lambda p: p["created_at"]}
MAX_LISTED = 500


def _page(template: str, **context: object) -> HTMLResponse:
    return HTMLResponse(_env.get_template(template).render(**context),
                        headers={"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                                 "img-src 'self' data:", "X-Content-Type-Options": "nosniff"})


def _chart(points: list[tuple[float, float, float]], width: int = 640, height: int = 200) -> dict:
    """SVG coordinates of the score and lower-bound lines over time (numbers only: nothing to escape)."""
    if not points:
        return {"width": width, "height": height, "score": "", "lower": "", "band": "", "ticks": []}
    t0, t1 = points[0][0], max(points[-1][0], points[0][0] + 1)
    pad = 30

    def xy(t: float, v: float) -> str:
        x = pad + (width - 2 * pad) * (t - t0) / (t1 - t0)
        return f"{x:.1f},{height - pad - (height - 2 * pad) * v:.1f}"

    score_line = " ".join(xy(t, s) for t, s, _ in points)
    lower_line = " ".join(xy(t, lo) for t, _, lo in points)
    band = score_line + " " + " ".join(xy(t, lo) for t, _, lo in reversed(points))
    ticks = [{"y": height - pad - (height - 2 * pad) * v, "label": f"{v:.1f}"} for v in (0, 0.5, 1.0)]
    return {"width": width, "height": height, "score": score_line, "lower": lower_line, "band": band,
            "ticks": ticks, "pad": pad, "start": t0, "end": t1}


def _trust_row(session, p: Provider, now: float) -> dict:  # noqa: ANN001
    t = service.trust_of(session, p.id, now)
    models = session.execute(select(Device.model, Device.profile).where(Device.provider_id == p.id)
                             .order_by(Device.position)).all()
    verified = service.verified_classes(session, p.id, now)
    return {"id": p.id, "name": p.name, "created_at": p.created_at, "models": [m for m, _ in models],
            "claimed": sorted({prof for _, prof in models}), "verified": sorted(set(verified.values())),
            "score": t.score, "lower_bound": t.lower_bound, "evidence": t.evidence, "status": t.status,
            "reason": t.reasons[0] if t.reasons else ""}


@router.get("/", response_class=HTMLResponse)
def index(session: ReadSessionDep, state: StateDep,
          sort: Annotated[str, Query(pattern="^(name|score|lower|evidence|created)$")] = "lower",
          order: Annotated[str, Query(pattern="^(asc|desc)$")] = "desc",
          model: Annotated[str | None, Query(max_length=200, pattern=NO_CONTROL)] = None) -> HTMLResponse:
    now = time.time()
    query = select(Provider).order_by(Provider.created_at).limit(MAX_LISTED)
    if model:
        query = query.where(Provider.id.in_(select(Device.provider_id).where(Device.model.icontains(model)
                                                                             | Device.profile.icontains(model))))
    rows = [_trust_row(session, p, now) for p in session.execute(query).scalars()]
    rows.sort(key=SORTS[sort], reverse=order == "desc")
    head = translog.signed_head(session, state.signing_key, now)
    return _page("index.html", providers=rows, sort=sort, order=order, model=model or "", head=head)


@router.get("/providers/{provider_id}", response_class=HTMLResponse)
def provider_page(provider_id: IdPath, session: ReadSessionDep) -> HTMLResponse:
    provider = session.get(Provider, provider_id)
    if provider is None:
        raise Problem(404, "Not found", f"no provider {provider_id}")
    now = time.time()
    records = service.verdict_records(session, provider_id)[-200:]
    points = []
    for i, r in enumerate(records):
        s = score(records[:i + 1], r.at)
        points.append((r.at, s.score, s.lower_bound))
    challenges = session.execute(select(ChallengeRow).where(ChallengeRow.provider_id == provider_id,
                                                            ChallengeRow.state == "judged")
                                 .order_by(ChallengeRow.judged_at.desc()).limit(50)).scalars().all()
    audits = session.execute(select(SegmentAudit).where(SegmentAudit.provider_id == provider_id)
                             .order_by(SegmentAudit.drawn_at.desc()).limit(50)).scalars().all()
    jobs = session.execute(select(Job).where(Job.provider_id == provider_id).order_by(Job.created_at.desc())
                           .limit(50)).scalars().all()
    devices = session.execute(select(Device).where(Device.provider_id == provider_id)
                              .order_by(Device.position)).scalars().all()
    return _page("provider.html", p=_trust_row(session, provider, now),
                 trust=service.trust_of(session, provider_id, now), devices=devices,
                 verified=service.verified_classes(session, provider_id, now), chart=_chart(points),
                 challenges=challenges, audits=audits, jobs=jobs)


@router.get("/challenges/{challenge_id}", response_class=HTMLResponse)
def challenge_page(challenge_id: IdPath, session: ReadSessionDep) -> HTMLResponse:
    row = session.get(ChallengeRow, challenge_id)
    if row is None:
        raise Problem(404, "Not found", f"no challenge {challenge_id}")
    provider = session.get(Provider, row.provider_id)
    roots = [row.roots[i:i + 32].hex() for i in range(0, len(row.roots), 32)] if row.roots else []
    return _page("challenge.html", c=row, provider=provider, roots=roots,
                 opened=[(o["round"], o["row"]) for o in row.openings or []])


@router.get("/log", response_class=HTMLResponse)
def log_page(session: ReadSessionDep, state: StateDep) -> HTMLResponse:
    head = translog.signed_head(session, state.signing_key, time.time())
    rows = session.execute(select(LogEntry).order_by(LogEntry.idx.desc()).limit(100)).scalars().all()
    entries = [{"index": r.idx, "kind": r.kind, "at": r.created_at, "body": json.loads(r.body)} for r in rows]
    return _page("log.html", head=head, entries=entries)
