"""Keyset pagination of the public lists (gateway/pages.py): a cursor walk sees every row once, in order."""

from __future__ import annotations

import re
import secrets

import pytest
from gpuproof.gateway import pages
from gpuproof.gateway.models import Challenge, Device, Provider, ProviderScore
from gpuproof.gateway.trust_cache import TrustCache
from sqlalchemy import select

from tests.gateway.test_api import Agent, assert_problem

ROWS = 23  # with pages of 5: four full pages and a short one


def seed_providers(gw) -> list[dict]:
    """ROWS providers whose creation times, names and lower bounds tie in groups (ids break the ties)."""
    rows = []
    with gw.app.state.gp.db.writer() as session:
        for i in range(ROWS):
            row = {"id": secrets.token_hex(16), "created_at": 1000.0 + i // 4, "name": ["Ann", "ann", "Bob"][i % 3],
                   "lower_bound": [0.05, 0.3, 0.05, 0.7][i % 4], "score": 0.5, "evidence": i % 2}
            rows.append(row)
            session.add(Provider(id=row["id"], public_key=secrets.token_bytes(32), name=row["name"],
                                 created_at=row["created_at"]))
        session.flush()
        for row in rows:
            session.add(Device(provider_id=row["id"], position=0, model="cpu-reference", count=1, vram_gib=8,
                               profile="cpu-reference", next_due_at=0.0))
            session.add(ProviderScore(provider_id=row["id"], score=row["score"], lower_bound=row["lower_bound"],
                                      evidence=row["evidence"], status="unproven", computed_at=0.0))
        session.commit()
    return rows


def walk(client, path: str, params: dict) -> list[dict]:
    """Every item of a list, following next_cursor from the first page."""
    items, cursor = [], None
    for _ in range(100):
        page = client.get(path, params={**params, **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200, page.text
        body = page.json()
        items += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("the cursor walk did not end")


def test_a_cursor_walk_lists_every_provider_once_in_order(gateway):
    rows = seed_providers(gateway)
    listed = walk(gateway.client, "/v1/providers", {"limit": 5})
    assert [p["id"] for p in listed] == [r["id"] for r in sorted(rows, key=lambda r: (r["created_at"], r["id"]))]
    filtered = walk(gateway.client, "/v1/providers", {"limit": 4, "min_lower_bound": 0.3})
    assert [p["id"] for p in filtered] == [r["id"] for r in sorted(rows, key=lambda r: (r["lower_bound"], r["id"]),
                                                                   reverse=True) if r["lower_bound"] >= 0.3]
    every = walk(gateway.client, "/v1/providers", {"limit": 5, "min_lower_bound": 0})  # ties at 0.05 span pages
    assert [p["id"] for p in every] == [r["id"] for r in sorted(rows, key=lambda r: (r["lower_bound"], r["id"]),
                                                                reverse=True)]
    first = gateway.client.get("/v1/providers", params={"limit": 5}).json()
    assert first["total"] == ROWS and first["total_exact"] is True


def test_an_offset_page_gives_a_cursor_that_continues_it(gateway):
    rows = sorted(seed_providers(gateway), key=lambda r: (r["created_at"], r["id"]))
    page = gateway.client.get("/v1/providers", params={"limit": 5, "offset": 10}).json()
    assert [p["id"] for p in page["items"]] == [r["id"] for r in rows[10:15]]
    after = gateway.client.get("/v1/providers", params={"limit": 5, "cursor": page["next_cursor"]}).json()
    assert [p["id"] for p in after["items"]] == [r["id"] for r in rows[15:20]]


@pytest.mark.parametrize("cursor", ["%%%", "bm90IGpzb24", pages.encode("verdicts", (1.0, "a")),
                                    pages.encode("providers-by-lower-bound", (0.5, "a")),
                                    pages.encode("providers", ("1.0", "a")), pages.encode("providers", (1.0,)),
                                    # review: an integer past 64 bits failed to bind (500); NaN passed json.loads
                                    pages.encode("providers", (10**30, "a")),
                                    pages.encode("providers", (float("nan"), "a"))])
def test_a_malformed_or_foreign_cursor_is_422(gateway, cursor):
    assert_problem(gateway.client.get("/v1/providers", params={"cursor": cursor}), 422, "cursor")


def test_an_offset_past_the_cap_is_422_and_points_to_the_cursor(gateway):
    assert gateway.client.get("/v1/providers", params={"offset": pages.MAX_OFFSET}).status_code == 200
    assert_problem(gateway.client.get("/v1/providers", params={"offset": pages.MAX_OFFSET + 1}), 422, "cursor")
    first = gateway.client.get("/v1/providers", params={"limit": 1}).json()
    assert first["next_cursor"] is None  # no providers: no next page


def test_the_total_stops_counting_at_the_cap(gateway, monkeypatch):
    seed_providers(gateway)
    monkeypatch.setattr(pages, "COUNT_CAP", 10)
    page = gateway.client.get("/v1/providers", params={"limit": 5}).json()
    assert page["total"] == 10 and page["total_exact"] is False


def test_a_cursor_walk_lists_every_verdict_once_newest_first(gateway):
    agent = Agent(gateway)
    agent.full_round()
    with gateway.app.state.gp.db.writer() as session:  # copies of the verdict, judged at tied instants
        real = session.execute(select(Challenge).where(Challenge.provider_id == agent.id)).scalar_one()
        columns = {c.key: getattr(real, c.key) for c in Challenge.__table__.columns}
        for i in range(ROWS - 1):
            session.add(Challenge(**{**columns, "id": secrets.token_hex(16), "judged_at": 2000.0 + i // 3}))
        session.commit()
        expected = session.execute(select(Challenge.id, Challenge.judged_at)
                                   .where(Challenge.provider_id == agent.id)).all()
    listed = walk(gateway.client, f"/v1/providers/{agent.id}/verdicts", {"limit": 5})
    assert [v["challenge_id"] for v in listed] == [cid for cid, _ in sorted(expected, key=lambda r: (r[1], r[0]),
                                                                            reverse=True)]
    assert_problem(gateway.client.get(f"/v1/providers/{agent.id}/verdicts",
                                      params={"cursor": pages.encode("providers", (1.0, "a"))}), 422, "cursor")
    assert_problem(gateway.client.get(f"/v1/providers/{agent.id}/verdicts",
                                      params={"offset": pages.MAX_OFFSET + 1}), 422, "cursor")


@pytest.mark.parametrize("sort,order", [("lower", "desc"), ("lower", "asc"), ("name", "asc"), ("created", "desc"),
                                        ("evidence", "desc")])
def test_the_dashboard_pages_on_through_every_provider_once(gateway, monkeypatch, sort, order):
    rows = seed_providers(gateway)
    monkeypatch.setattr("gpuproof.gateway.dashboard.MAX_LISTED", 5)
    seen, url = [], f"/?sort={sort}&order={order}"
    for _ in range(100):
        html = gateway.client.get(url).text
        seen += re.findall(r'href="/providers/([0-9a-f]{32})"', html)
        found = re.search(r'id="next-page" href="([^"]+)"', html)
        if found is None:
            break
        url = found.group(1).replace("&amp;", "&")
    key = {"lower": "lower_bound", "name": "name", "created": "created_at", "evidence": "evidence"}[sort]
    # each page is chosen by (column, id); within a page the rows are shown in the column's order (fresh trust)
    assert sorted(seen) == sorted(r["id"] for r in rows) and len(seen) == ROWS
    by_key = {r["id"]: (r[key].lower() if sort == "name" else r[key]) for r in rows}
    values = [by_key[pid] for pid in seen]
    assert values == sorted(values, reverse=order == "desc")


def test_a_total_is_counted_once_per_list_and_filter_until_it_expires(gateway):
    """pages.Totals: a list's pages reuse its capped total for the TTL (counting read up to 10,001 index
    entries on every page: half a listing's cost at 100,000 providers), another filter counts its own, and
    after the TTL the count is taken afresh."""
    seed_providers(gateway)
    now = [0.0]
    totals = pages.Totals(ttl=5.0, clock=lambda: now[0])
    db = gateway.app.state.gp.db

    def total(key, bound: float) -> tuple[int, bool]:
        with db.reader() as session:
            query = select(Provider).join(ProviderScore, ProviderScore.provider_id == Provider.id).where(
                ProviderScore.lower_bound >= bound)
            return totals.get(key, session, query, Provider.id)

    assert total(("providers", 0.0), 0.0) == (ROWS, True)
    with db.writer() as session:  # a row more, seen once the TTL has passed
        session.add(Provider(id=secrets.token_hex(16), public_key=secrets.token_bytes(32), name="late", created_at=1.0))
        session.flush()
        session.add(ProviderScore(provider_id=session.execute(select(Provider.id).where(Provider.name == "late"))
                                  .scalar_one(), score=0.5, lower_bound=0.9, evidence=0, status="unproven",
                                  computed_at=0.0))
        session.commit()
    now[0] = 4.9
    assert total(("providers", 0.0), 0.0) == (ROWS, True)  # reused
    assert total(("providers", 0.5), 0.5) == (ROWS // 4 + 1, True)  # another filter: its own count
    now[0] = 5.1
    assert total(("providers", 0.0), 0.0) == (ROWS + 1, True)  # expired: counted again


def test_the_listing_reuses_its_total_for_the_configured_time(gateway):
    """The route uses the gateway's Totals (settings.list_totals_s, 5 s): with pages not kept (page cache
    off), a provider registered since the first page shows in the rows at once and in `total` when the
    TTL has passed."""
    seed_providers(gateway)
    state = gateway.app.state.gp
    now = [0.0]
    state.totals = pages.Totals(ttl=5.0, clock=lambda: now[0])
    state.page_cache = TrustCache(0)
    assert gateway.client.get("/v1/providers", params={"limit": 50}).json()["total"] == ROWS
    Agent(gateway)  # registers a provider
    page = gateway.client.get("/v1/providers", params={"limit": 50}).json()
    assert page["total"] == ROWS and len(page["items"]) == ROWS + 1
    now[0] = 6.0
    assert gateway.client.get("/v1/providers", params={"limit": 50}).json()["total"] == ROWS + 1


def test_a_listing_page_is_kept_for_its_readers_then_read_again(gateway):
    """GPUPROOF_PAGE_CACHE_S: within it every reader of a page gets the same bytes (one read of the database
    for all of them, issue 18), a registration since shows once it has passed."""
    seed_providers(gateway)
    state = gateway.app.state.gp
    now = [0.0]
    state.page_cache = TrustCache(0.5, clock=lambda: now[0])
    state.totals = pages.Totals(ttl=0)
    first = gateway.client.get("/v1/providers", params={"limit": 50})
    Agent(gateway)  # registers a provider
    again = gateway.client.get("/v1/providers", params={"limit": 50})
    assert again.content == first.content and len(first.json()["items"]) == ROWS
    other = gateway.client.get("/v1/providers", params={"limit": 49}).json()  # another page: read now
    assert len(other["items"]) == ROWS + 1 and other["total"] == ROWS + 1
    now[0] = 1.1  # past the TTL and the stale allowance (the TTL again): read afresh
    later = gateway.client.get("/v1/providers", params={"limit": 50}).json()
    assert len(later["items"]) == ROWS + 1 and later["total"] == ROWS + 1
