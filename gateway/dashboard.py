"""The dashboard: plain server-rendered HTML (Jinja2, autoescaped), no JavaScript, no build step.

/                       providers: sortable (?sort=&order=), filter by model (?model=), the log's head
/providers/{id}         score and its 95% lower bound over time (an inline SVG chart with a time axis and the
                        release threshold), devices, recent challenge verdicts, training audits and jobs
/challenges/{id}        one challenge: sizes, timing, opened rows, the verdict and its reasons
/jobs                   every job with its provider and its settlement decision and reasons (never the
                        marketplace's private references: renter_ref, price_ref)
/log                    the signed tree head and the latest entries, as fields with links

Every page takes ?refresh=N (2-3600 s): it then reloads itself every N seconds (a <meta http-equiv="refresh">,
no script) and its links keep the parameter, so a live demo can be watched; without it nothing reloads.

Everything a provider controls (its name, device models, verdict texts that quote them) goes through
Jinja2's autoescaping; tests/gateway/test_dashboard.py and the browser test feed it HTML and script.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse
from gpuproof.gateway import pages, service, translog
from gpuproof.gateway.limits import limit_ip
from gpuproof.gateway.models import Challenge as ChallengeRow
from gpuproof.gateway.models import Device, Job, LogEntry, Provider, ProviderScore, SegmentAudit
from gpuproof.gateway.problems import Problem
from gpuproof.gateway.schemas import NO_CONTROL, IdPath
from gpuproof.gateway.sessions import ReadSessionDep, in_read_threads
from gpuproof.gateway.state import State, StateDep
from gpuproof.verifier.profiles import Profile
from gpuproof.verifier.trust import SettlementPolicy, score
from jinja2 import Environment, FileSystemLoader, pass_context, select_autoescape
from jinja2.runtime import Context
from sqlalchemy import func, select

# the lower bound a provider needs for a job's payment to be released: settlement (gateway/routers/jobs.py)
# decides with the default policy, so the chart marks the default policy's threshold
RELEASE_THRESHOLD = SettlementPolicy().release_min_lower_bound

router = APIRouter(include_in_schema=False, dependencies=[Depends(limit_ip)])
_env = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                   autoescape=select_autoescape(["html"], default=True), trim_blocks=True, lstrip_blocks=True)
_env.filters["when"] = lambda t: time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) if t else "-"
_env.filters["pct"] = lambda v: "-" if v is None else f"{v:.3f}"

SORTS = {"name": lambda p: p["name"].lower(), "score": lambda p: p["score"], "lower": lambda p: p["lower_bound"],
         "evidence": lambda p: p["evidence"], "created": lambda p: p["created_at"]}
MAX_LISTED = 100  # rows on a page: the first of the chosen order


@dataclass(frozen=True)
class View:
    """What every page needs to know about its own address: the auto-refresh period the reader asked for
    (None: no reload) and the address without and with a refresh, for the nav's on/off links."""

    refresh: int | None
    still: str
    live: str


async def _view(request: Request,  # async: a cheap dependency takes no worker thread (they may all be busy)
          refresh: Annotated[int | None, Query(ge=2, le=3600, description="reload every N seconds")] = None) -> View:
    query = [(k, v) for k, v in request.query_params.multi_items() if k != "refresh"]
    path = request.url.path
    still = path + ("?" + urlencode(query) if query else "")
    return View(refresh, still, path + "?" + urlencode([*query, ("refresh", str(refresh or 5))]))


ViewDep = Annotated[View, Depends(_view)]


@pass_context
def _keep(context: Context, url: str) -> str:
    """`url` with the page's ?refresh= carried over, so following a link keeps a live page live."""
    view = context.get("view")
    if not isinstance(view, View) or view.refresh is None:
        return url
    url, hash_, fragment = url.partition("#")
    return f"{url}{'&' if '?' in url else '?'}refresh={view.refresh}{hash_}{fragment}"


_env.filters["keep"] = _keep


PAGE_HEADERS = {"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:",
                "X-Content-Type-Options": "nosniff"}


def _render(template: str, view: View, **context: object) -> str:
    return _env.get_template(template).render(view=view, **context)


def _page(template: str, view: View, **context: object) -> HTMLResponse:
    return HTMLResponse(_render(template, view, **context), headers=PAGE_HEADERS)


# time-axis steps, seconds: each divides a day or a week, so ticks fall on round UTC times
_TIME_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
               172800, 604800)


def _time_ticks(t0: float, t1: float, most: int = 6) -> tuple[list[tuple[float, str]], str]:
    """Round UTC times in [t0, t1] (at most `most`, at least one step apart) with their labels, and the
    axis caption with the date(s). Over more than one day the first tick and each new day's first tick
    carry the date."""
    span = t1 - t0
    step = next((s for s in _TIME_STEPS if span / s <= most), None)
    if step is None:
        step = _TIME_STEPS[-1] * math.ceil(span / (most * _TIME_STEPS[-1]))
    day0, day1 = time.strftime("%Y-%m-%d", time.gmtime(t0)), time.strftime("%Y-%m-%d", time.gmtime(t1))
    clock = "%H:%M:%S" if step < 60 else "%H:%M"
    ticks, last_day = [], day0 if day0 == day1 else ""
    for t in range(math.ceil(t0 / step) * step, int(t1) + 1, step):
        day = time.strftime("%m-%d", time.gmtime(t))
        if step >= 86400:
            ticks.append((float(t), day))
            continue
        ticks.append((float(t), time.strftime(clock, time.gmtime(t)) if day == last_day or day0 == day1
                      else f"{day} {time.strftime(clock, time.gmtime(t))}"))
        last_day = day
    return ticks, f"time (UTC, {day0})" if day0 == day1 else f"time (UTC, {day0} to {day1})"


def _chart(points: list[tuple[float, float, float, bool]], width: int = 760, height: int = 230) -> dict:
    """SVG coordinates of the score and lower-bound lines over time (`points`: a verdict's time, the score
    and lower bound after it, whether it passed), the time and value axes' ticks and the release threshold
    (numbers and fixed labels only: nothing to escape). One verdict is a point in the middle of a minute;
    lines need two."""
    left, right, top, bottom = 44, 34, 10, 40
    if not points:
        return {"width": width, "height": height, "score": "", "lower": "", "band": "", "ticks": [], "dots": []}
    t0, t1 = points[0][0], points[-1][0]
    if t1 - t0 < 60:  # a single verdict or a burst: centre it in a minute instead of pinning it to the edge
        mid = (t0 + t1) / 2
        t0, t1 = mid - 30, mid + 30

    def x(t: float) -> float:
        return left + (width - left - right) * (t - t0) / (t1 - t0)

    def y(v: float) -> float:
        return height - bottom - (height - top - bottom) * v

    def xy(t: float, v: float) -> str:
        return f"{x(t):.1f},{y(v):.1f}"

    score_line = " ".join(xy(t, s) for t, s, _, _ in points) if len(points) > 1 else ""
    lower_line = " ".join(xy(t, lo) for t, _, lo, _ in points) if len(points) > 1 else ""
    band = (" ".join(xy(t, s) for t, s, _, _ in points) + " "
            + " ".join(xy(t, lo) for t, _, lo, _ in reversed(points))) if len(points) > 1 else ""
    # a dot per verdict (red: failed) while there are few enough to tell apart; failures always
    dots = [{"x": round(x(t), 1), "score": round(y(s), 1), "lower": round(y(lo), 1), "passed": passed,
             "label": f"{time.strftime('%H:%M:%S', time.gmtime(t))} UTC, {'passed' if passed else 'failed'}: "
                      f"score {s:.3f}, lower bound {lo:.3f}"}
            for t, s, lo, passed in points if len(points) <= 60 or not passed]
    time_ticks, caption = _time_ticks(t0, t1)
    return {"width": width, "height": height, "score": score_line, "lower": lower_line, "band": band,
            "dots": dots, "single": len(points) == 1, "left": left, "right": width - right, "top": top,
            "bottom": height - bottom,
            "ticks": [{"y": round(y(v), 1), "label": f"{v:.1f}"} for v in (0, 0.5, 1.0)],
            "time_ticks": [{"x": round(x(t), 1), "label": label} for t, label in time_ticks],
            "caption": caption, "threshold": {"y": round(y(RELEASE_THRESHOLD), 1), "value": RELEASE_THRESHOLD},
            "start": points[0][0], "end": points[-1][0]}


def _trust_row(session, p: Provider, now: float, profiles: Mapping[str, Profile]) -> dict:  # noqa: ANN001
    return _trust_rows(session, [p], now, profiles)[0]


def _trust_rows(session, providers: list[Provider], now: float,  # noqa: ANN001
                profiles: Mapping[str, Profile]) -> list[dict]:
    """The table rows of `providers`, their trust computed afresh, from a fixed number of queries."""
    ids = [p.id for p in providers]
    trusts = service.trusts_of(session, ids, now)
    verified = service.verified_classes_of(session, ids, now, profiles)
    models: dict[str, list[tuple[str, str]]] = {pid: [] for pid in ids}
    if ids:
        for pid, model, profile in session.execute(select(Device.provider_id, Device.model, Device.profile)
                                                   .where(Device.provider_id.in_(ids))
                                                   .order_by(Device.provider_id, Device.position)):
            models[pid].append((model, profile))
    rows = []
    for p in providers:
        t = trusts[p.id]
        rows.append({"id": p.id, "name": p.name, "created_at": p.created_at, "models": [m for m, _ in models[p.id]],
                     "claimed": sorted({prof for _, prof in models[p.id]}),
                     "verified": sorted(set(verified[p.id].values())), "score": t.score,
                     "lower_bound": t.lower_bound, "evidence": t.evidence, "status": t.status,
                     "reason": t.reasons[0] if t.reasons else ""})
    return rows


def _names(session, ids: set[str]) -> dict[str, str]:  # noqa: ANN001
    """Provider names by id, for the rows that show them."""
    if not ids:
        return {}
    return {pid: name for pid, name in session.execute(select(Provider.id, Provider.name)
                                                     .where(Provider.id.in_(ids)))}


INDEX_PARAMETERS = ("sort", "order", "model", "cursor")


@router.get("/", response_class=HTMLResponse)
async def index(request: Request, state: StateDep,
                sort: Annotated[str, Query(pattern="^(name|score|lower|evidence|created)$")] = "lower",
                order: Annotated[str, Query(pattern="^(asc|desc)$")] = "desc",
                model: Annotated[str | None, Query(max_length=200, pattern=NO_CONTROL)] = None,
                cursor: pages.CursorQuery = None,
                refresh: Annotated[int | None, Query(ge=2, le=3600, description="reload every N seconds")] = None,
                ) -> HTMLResponse:
    """The providers page, kept `settings.page_cache_s` (0.5 s) for every reader of the same address and
    re-rendered in the background meanwhile (gateway.trust_cache.TrustCache `State.front_cache`, on threads
    of its own, apart from the listing's pages: those any reader can ask for by the thousand): a flood
    of front-page reads costs one render per half second, and a read never waits for one after the first
    (issue 18). The page's links carry the parameters it knows, in one order, so that every address of the
    same page shares one entry."""
    given = {"sort": sort, "order": order, "model": model, "cursor": cursor}
    query = urlencode([(k, given[k]) for k in INDEX_PARAMETERS if k in request.query_params and given[k] is not None])
    still = "/" + ("?" + query if query else "")
    view = View(refresh, still, still + ("&" if query else "?") + f"refresh={refresh or 5}")
    html = await state.front_cache.get_or_compute(f"{refresh}|{query}", lambda _: _index_html(
        state, view, sort, order, model, cursor).encode())
    return HTMLResponse(html, headers=PAGE_HEADERS)


def _index_html(state: State, view: View, sort: str, order: str, model: str | None, cursor: str | None) -> str:
    with state.db.reader() as session:
        return _providers_page(session, state, view, sort, order, model, cursor)


def _providers_page(session, state: State, view: View, sort: str, order: str,  # noqa: ANN001
                    model: str | None, cursor: str | None) -> str:
    now = time.time()
    # the page is chosen by the stored scores (models.ProviderScore), in SQL, by keyset on an index of
    # (column, provider id) (migration 0021): it costs O(page) at any depth; its rows then show trust
    # computed afresh
    column, kind_of = {"name": (func.lower(Provider.name), str), "created": (Provider.created_at, float),
                       "score": (ProviderScore.score, float), "lower": (ProviderScore.lower_bound, float),
                       "evidence": (ProviderScore.evidence, int)}[sort]
    query = select(Provider, column).join(ProviderScore, ProviderScore.provider_id == Provider.id)
    if model:
        query = query.where(Provider.id.in_(select(Device.provider_id).where(Device.model.icontains(model)
                                                                             | Device.profile.icontains(model))))
    total, exact = state.totals.get(("dashboard", model or ""), session, query, Provider.id)
    # the id breaks ties in the column's direction, so one index scan (forwards or backwards) gives the order;
    # the providers table's own id for the name and the creation time, the scores' for the others
    tie = Provider.id if sort in ("name", "created") else ProviderScore.provider_id
    kind = f"dashboard-{sort}-{order}"
    if cursor is not None:
        query = query.where(pages.after((column, tie), pages.decode(kind, cursor, (kind_of, str)),
                                        descending=order == "desc"))
    ordered = (column.desc(), tie.desc()) if order == "desc" else (column.asc(), tie.asc())
    found = session.execute(query.order_by(*ordered).limit(MAX_LISTED + 1)).all()
    more, found = len(found) > MAX_LISTED, found[:MAX_LISTED]
    rows = _trust_rows(session, [p for p, _ in found], now, state.verifier.profiles)
    rows.sort(key=SORTS[sort], reverse=order == "desc")
    after = None
    if more:
        params = {"sort": sort, "order": order, **({"model": model} if model else {}),
                  "cursor": pages.encode(kind, (found[-1][1], found[-1][0].id))}
        after = "/?" + urlencode(params)
    head = translog.signed_head(session, state.signing_key, now, state.log_origin, state.log_cache)
    return _render("index.html", view, providers=rows, total=total, total_exact=exact, sort=sort, order=order,
                 model=model or "", head=head, next_page=after, paged=cursor is not None)


@router.get("/providers/{provider_id}", response_class=HTMLResponse)
@in_read_threads()
def provider_page(provider_id: IdPath, session: ReadSessionDep, state: StateDep, view: ViewDep) -> HTMLResponse:
    provider = session.get(Provider, provider_id)
    if provider is None:
        raise Problem(404, "Not found", f"no provider {provider_id}")
    now = time.time()
    records = service.verdict_records(session, provider_id)[-200:]
    points = []
    for i, r in enumerate(records):
        s = score(records[:i + 1], r.at)
        points.append((r.at, s.score, s.lower_bound, r.passed))
    challenges = session.execute(select(ChallengeRow).where(ChallengeRow.provider_id == provider_id,
                                                            ChallengeRow.state == "judged")
                                 .order_by(ChallengeRow.judged_at.desc()).limit(50)).scalars().all()
    audits = session.execute(select(SegmentAudit).where(SegmentAudit.provider_id == provider_id)
                             .order_by(SegmentAudit.drawn_at.desc()).limit(50)).scalars().all()
    jobs = [_public_job(j) for j in session.execute(select(Job).where(Job.provider_id == provider_id)
                                                    .order_by(Job.created_at.desc()).limit(50)).scalars()]
    devices = session.execute(select(Device).where(Device.provider_id == provider_id)
                              .order_by(Device.position)).scalars().all()
    last_rounds = {device_id: (issued_at, outcome) for device_id, issued_at, outcome in session.execute(
        select(ChallengeRow.device_id, ChallengeRow.issued_at, ChallengeRow.outcome)
        .where(ChallengeRow.provider_id == provider_id).order_by(ChallengeRow.issued_at))}  # the latest wins
    return _page("provider.html", view, p=_trust_row(session, provider, now, state.verifier.profiles),
                 trust=service.trust_of(session, provider_id, now), devices=devices, last_rounds=last_rounds,
                 verified=service.verified_classes(session, provider_id, now, state.verifier.profiles),
                 chart=_chart(points),
                 threshold=RELEASE_THRESHOLD, challenges=challenges, audits=audits, jobs=jobs)


@router.get("/challenges/{challenge_id}", response_class=HTMLResponse)
@in_read_threads()
def challenge_page(challenge_id: IdPath, session: ReadSessionDep, view: ViewDep) -> HTMLResponse:
    row = session.get(ChallengeRow, challenge_id)
    if row is None:
        raise Problem(404, "Not found", f"no challenge {challenge_id}")
    provider = session.get(Provider, row.provider_id)
    roots = [row.roots[i:i + 32].hex() for i in range(0, len(row.roots), 32)] if row.roots else []
    return _page("challenge.html", view, c=row, provider=provider, roots=roots,
                 opened=[(o["round"], o["row"]) for o in row.openings or []])


def _public_job(job: Job) -> dict:
    """The fields of a job that any visitor may see. The marketplace's references (renter_ref, price_ref)
    and its checkpoint policy are between it and the gateway: they are never read here, so no template
    can show them."""
    return {"id": job.id, "provider_id": job.provider_id, "created_at": job.created_at,
            "decision": job.decision, "reasons": list(job.reasons or []), "decided_at": job.decided_at,
            "final": job.final, "training_state": job.training_state,
            "training_flags": list(job.training_flags or [])}


@router.get("/jobs", response_class=HTMLResponse)
@in_read_threads()
def jobs_page(session: ReadSessionDep, view: ViewDep) -> HTMLResponse:
    jobs = [_public_job(j) for j in session.execute(select(Job).order_by(Job.created_at.desc())
                                                    .limit(MAX_LISTED)).scalars()]
    counts: dict[str, int] = {}
    for j in jobs:
        counts[j["decision"] or "not settled"] = counts.get(j["decision"] or "not settled", 0) + 1
    return _page("jobs.html", view, jobs=jobs, counts=counts,
                 names=_names(session, {j["provider_id"] for j in jobs}))


def _text(value: Any) -> str:
    return value if isinstance(value, str) else "" if value is None else json.dumps(value)


def _log_fields(kind: str, body: Any) -> dict:
    """One log entry as the log page shows it: who (provider), what about (challenge, job), the outcome and
    the reasons. Fields are picked by name, never dumped, so a field the page does not know (and a
    marketplace reference a settlement entry carries) is not shown; the entry's exact bytes are in the API
    (/v1/log/entries) for `gpuproof log verify`."""
    body = body if isinstance(body, dict) else {}
    verdict = body.get("verdict") if isinstance(body.get("verdict"), dict) else {}
    fields: dict[str, Any] = {"provider": _text(body.get("provider_id")), "challenge": _text(body.get("challenge_id")),
                              "job": _text(body.get("job_id") or verdict.get("job_id")), "outcome": "",
                              "details": []}
    if kind == "registration":
        devices = body.get("devices") if isinstance(body.get("devices"), list) else []
        fields["outcome"] = "registered"
        fields["details"] = [f"name {_text(body.get('name'))}"] + [
            f"{_text(d.get('count', 1))} × {_text(d.get('model'))}" for d in devices if isinstance(d, dict)]
    elif kind == "verdict":
        fields["outcome"] = _text(verdict.get("outcome"))
        fields["details"] = [f"correctness {_text(verdict.get('correctness'))}, timing {_text(verdict.get('timing'))}",
                             *(_text(r) for r in verdict.get("reasons") or [])]
        if body.get("transcript_sha256"):
            fields["details"].append(f"transcript hash {_text(body.get('transcript_sha256'))[:16]}…")
    elif kind == "commitment":
        fields["outcome"] = "committed"
        fields["details"] = [f"roots hash {_text(body.get('roots_sha256'))[:16]}…"]
    elif kind == "opening-request":
        pairs = body.get("pairs") if isinstance(body.get("pairs"), list) else []
        fields["outcome"] = "rows drawn"
        fields["details"] = [f"{len(pairs)} (round, row) pairs, x hash {_text(body.get('x_sha256'))[:16]}…"]
    elif kind == "training-verdict":
        fields["outcome"] = _text(verdict.get("outcome"))
        fields["details"] = [f"segment {_text(verdict.get('start_step'))} → {_text(verdict.get('end_step'))}",
                             _text(verdict.get("reason"))]
    elif kind == "checkpoint":
        fields["outcome"] = f"step {_text(body.get('step'))}"
        fields["details"] = [f"hash {_text(body.get('hash'))[:16]}…"]
    elif kind == "training-close":
        fields["outcome"] = "closed"
        segments = body.get("segments") if isinstance(body.get("segments"), list) else []
        fields["details"] = [f"{_text(body.get('commitments'))} commitments",
                             "segments drawn: " + (", ".join(f"{_text(s[0])} → {_text(s[1])}" for s in segments
                                                             if isinstance(s, list) and len(s) == 2) or "none"),
                             *(_text(f) for f in body.get("flags") or [])]
    elif kind == "settlement":
        fields["outcome"] = _text(body.get("decision"))
        fields["final"] = bool(body.get("final"))
        fields["details"] = [_text(r) for r in body.get("reasons") or []]
    fields["details"] = [d for d in fields["details"] if d]
    return fields


@router.get("/log", response_class=HTMLResponse)
@in_read_threads()
def log_page(session: ReadSessionDep, state: StateDep, view: ViewDep) -> HTMLResponse:
    head = translog.signed_head(session, state.signing_key, time.time(), state.log_origin, state.log_cache)
    rows = session.execute(select(LogEntry).order_by(LogEntry.idx.desc()).limit(100)).scalars().all()
    entries = [{"index": r.idx, "kind": r.kind, "at": r.created_at} | _log_fields(r.kind, json.loads(r.body))
               for r in rows]
    return _page("log.html", view, head=head, entries=entries,
                 names=_names(session, {e["provider"] for e in entries if e["provider"]}))
