"""The dashboard's HTML: content, sorting, filtering, and everything a provider controls escaped."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

from gpuproof.client import registration
from gpuproof.gateway import admin, dashboard
from gpuproof.verifier import signatures
from gpuproof.verifier.trust import SettlementPolicy

from tests.gateway.test_api import Agent

EVIL = '<script>alert(1)</script><img src=x onerror="document.title=1">'


class Elements(HTMLParser):
    """Every element and attribute the browser would build from the page."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):  # noqa: ANN001
        self.tags.append(tag)
        self.attrs += [name for name, _ in attrs]


def test_pages_show_providers_verdicts_and_the_log(gateway):
    good = Agent(gateway, name="alpha honest")
    good.full_round()
    other = Agent(gateway, name="beta", model="NVIDIA H100")
    page = gateway.client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    text = page.text
    assert "alpha honest" in text and "beta" in text and "Signed log head" in text
    assert text.index("alpha honest") < text.index("beta")  # default: highest lower bound first
    by_name = gateway.client.get("/?sort=name&order=desc").text
    assert by_name.index("beta") < by_name.index("alpha honest")
    filtered = gateway.client.get("/?model=h100").text
    assert "beta" in filtered and "alpha honest" not in filtered
    assert gateway.client.get("/?sort=nope").status_code == 422
    provider = gateway.client.get(f"/providers/{good.id}").text
    # one verdict: a point (score and lower bound), not an invisible one-point line
    assert '<svg id="score-chart"' in provider and provider.count('class="verdict"') == 1
    assert "<polyline" not in provider and "One verdict, at" in provider
    assert provider.count('class="pass">pass</td>') == 1 and "opened rows are committed and exact" in provider
    cid = re.search(r'href="/challenges/([0-9a-f]{32})"', provider).group(1)
    challenge = gateway.client.get(f"/challenges/{cid}").text
    assert "Verdict" in challenge and "transcript JSON" in challenge and "m=16, n=256, k=64" in challenge
    assert "No verdicts yet" in gateway.client.get(f"/providers/{other.id}").text
    log = gateway.client.get("/log").text
    assert "Signed tree head" in log and "registration" in log and "verdict" in log
    assert gateway.client.get("/providers/" + "0" * 32).status_code == 404


def test_everything_a_provider_controls_is_escaped(gateway):
    key = signatures.new_private_key()
    body = registration(key, EVIL[:100], [{"model": EVIL[:200], "vram_gib": 8}], audience=gateway.audience)
    r = gateway.client.post("/v1/providers", **body)
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    for path in ("/", f"/providers/{pid}", "/log", "/jobs", f"/?model={EVIL[:50]}", "/log?refresh=5"):
        page = gateway.client.get(path).text
        parsed = Elements(page)
        assert "script" not in parsed.tags and "img" not in parsed.tags, path
        assert not any(a.startswith("on") for a in parsed.attrs), path
        assert "<script>alert" not in page and "<img src=x" not in page, path
    page = gateway.client.get(f"/providers/{pid}").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and EVIL[:100] in html.unescape(page)  # shown as text


def cheat_once(agent, device):
    """One challenge on `device` answered with a wrong Merkle path: a correctness failure."""
    c = agent.next(device).json()
    params, roots = agent.prove(c)
    req = agent.post(f"/v1/challenges/{c['challenge_id']}/commitment", {"roots": [r.hex() for r in roots]}).json()
    bad = agent.openings(params, roots, req["pairs"])
    bad["openings"][0]["path"][0] = "00" * 32
    assert agent.post(f"/v1/challenges/{c['challenge_id']}/openings", bad).status_code == 200
    return c["challenge_id"]


def test_the_score_chart_has_a_time_axis_and_the_release_threshold(gateway):
    agent = Agent(gateway, devices=2)
    first, _ = agent.full_round()
    cid = cheat_once(agent, 1)
    page = gateway.client.get(f"/providers/{agent.id}").text
    svg = page[page.index('<svg id="score-chart"'):page.index("</svg>")]
    assert svg.count("<polyline") == 2 and svg.count('class="verdict"') == 2
    assert 'fill="#cf222e"' in svg  # the failed verdict's dot is red
    labels = re.findall(r'class="time-tick"[^>]*>([^<]+)</text>', svg)
    assert labels and all(re.fullmatch(r"\d\d:\d\d(:\d\d)?", t) for t in labels), labels
    assert "time (UTC, 20" in svg
    threshold = SettlementPolicy().release_min_lower_bound  # what settlement decides with
    assert 'id="release-threshold"' in svg and f"release threshold {threshold:.2f}" in svg
    assert cid[:12] in page and first["challenge_id"][:12] in page


def test_chart_geometry_over_hours_and_for_a_single_verdict():
    t0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
    chart = dashboard._chart([(t0 + i * 600, 0.5 + i / 100, 0.2 + i / 100, True) for i in range(30)])
    labels = [t["label"] for t in chart["time_ticks"]]
    # hourly ticks; over midnight, the first tick and the new day's first carry the date
    assert labels == ["11-14 23:00", "11-15 00:00", "01:00", "02:00", "03:00"]
    assert chart["caption"] == "time (UTC, 2023-11-14 to 2023-11-15)"
    xs = [t["x"] for t in chart["time_ticks"]]
    assert xs == sorted(xs) and chart["left"] <= xs[0] and xs[-1] <= chart["right"]
    # the threshold sits where the value axis puts it: between the 0.5 and 1.0 grid lines, in proportion
    y0, y5, y10 = (t["y"] for t in chart["ticks"])
    want = y0 + (y10 - y0) * dashboard.RELEASE_THRESHOLD
    assert abs(chart["threshold"]["y"] - want) < 0.2 and y10 < chart["threshold"]["y"] < y5
    one = dashboard._chart([(t0, 0.667, 0.224, True)])
    assert one["single"] and one["score"] == "" and len(one["dots"]) == 1
    assert abs(one["dots"][0]["x"] - (one["left"] + one["right"]) / 2) < 1  # centred, not on the edge
    assert len(one["time_ticks"]) >= 3 and all(re.fullmatch(r"\d\d:\d\d:\d\d", t["label"])
                                                 for t in one["time_ticks"])
    assert dashboard._chart([])["dots"] == []


def test_the_log_page_shows_fields_and_links_not_json(gateway):
    agent = Agent(gateway, name="it's me")
    c, _ = agent.full_round()
    log = gateway.client.get("/log").text
    assert f'href="/providers/{agent.id}"' in log and f'href="/challenges/{c["challenge_id"]}"' in log
    assert "\\u0027" not in log and "&#34;" not in log and '{"' not in log and "provider_id" not in log
    rows = Elements(log)
    assert rows.tags.count("tr") >= 3  # the head, registration and verdict
    assert "registered" in log and 'class="pass">pass</span>' in log and "opened rows are committed and exact" in log
    assert "it&#39;s me" in log  # the provider's name, escaped once, as text
    # the head is shown as its signed checkpoint, with the verifier key that checks it
    head = gateway.client.get("/v1/log/head").json()
    assert f'<pre id="checkpoint">{html.escape(head["checkpoint"], quote=True)}</pre>' in log
    assert html.escape(head["verifier_key"]) in log


PRIVATE = {"renter_ref": "renter-SECRET-7", "price_ref": "usd:SECRET-99"}


def test_the_jobs_page_lists_settlements_and_never_the_private_refs(gateway):
    agent = Agent(gateway, name="box", devices=2)
    agent.full_round()
    key = admin.create_api_key(gateway.app.state.gp.db, "market", ["jobs", "settle"])
    auth = {"Authorization": f"Bearer {key}"}
    held = gateway.client.post("/v1/jobs", json={**PRIVATE, "provider_id": agent.id}, headers=auth).json()
    assert gateway.client.post(f"/v1/jobs/{held['id']}/settlement", headers=auth).json()["decision"] == "hold"
    unsettled = gateway.client.post("/v1/jobs", json={**PRIVATE, "provider_id": agent.id}, headers=auth).json()
    refunded = gateway.client.post("/v1/jobs", json={**PRIVATE, "provider_id": agent.id}, headers=auth).json()
    cheat_once(agent, 1)
    assert gateway.client.post(f"/v1/jobs/{refunded['id']}/settlement", headers=auth).json()["decision"] == "refund"
    page = gateway.client.get("/jobs").text
    assert 'href="/jobs"' in gateway.client.get("/").text  # in the nav
    rows = {m.group(1): m.group(2) for m in re.finditer(r'<tr class="job-row" id="job-([0-9a-f]{32})">(.*?)</tr>',
                                                        page, re.S)}
    assert set(rows) == {held["id"], unsettled["id"], refunded["id"]}
    assert 'class="hold">hold</span>' in rows[held["id"]] and "is under" in rows[held["id"]]
    refund = rows[refunded["id"]]
    assert 'class="refund">refund</span>' in refund and "failed its correctness check" in refund
    assert "not settled" in rows[unsettled["id"]]
    assert all(f'href="/providers/{agent.id}"' in r and ">box</a>" in r for r in rows.values())
    assert f'title="{held["id"]}"' in rows[held["id"]] and f'{held["id"][:12]}…' in rows[held["id"]]
    for path in ("/jobs", f"/providers/{agent.id}", "/log", "/"):
        text = gateway.client.get(path).text
        assert all(v not in text for v in PRIVATE.values()), path
        assert "renter" not in text.lower() and "price_ref" not in text, path


def test_pages_refresh_only_when_asked(gateway):
    agent = Agent(gateway)
    c, _ = agent.full_round()
    paths = ["/", f"/providers/{agent.id}", f"/challenges/{c['challenge_id']}", "/jobs", "/log"]
    for path in paths:
        quiet = gateway.client.get(path).text
        assert 'http-equiv="refresh"' not in quiet and "refresh=" in quiet, path  # an opt-in link only
        sep = "&" if "?" in path else "?"
        live = gateway.client.get(f"{path}{sep}refresh=7")
        assert live.status_code == 200, path
        assert '<meta http-equiv="refresh" content="7">' in live.text, path
        assert 'href="/jobs?refresh=7"' in live.text and 'href="/log?refresh=7"' in live.text, path
        assert f'<a href="{path}">stop</a>' in live.text, path
    index = gateway.client.get("/?sort=name&refresh=7").text
    assert f'href="/providers/{agent.id}?refresh=7"' in index and "sort=name&amp;order=asc&amp;refresh=7" in index
    assert '<a href="/?sort=name">stop</a>' in index
    for bad in ("1", "0", "99999", "soon"):
        assert gateway.client.get(f"/?refresh={bad}").status_code == 422, bad


def test_ids_are_shortened_with_the_full_id_in_the_title(gateway):
    agent = Agent(gateway)
    c, _ = agent.full_round()
    cid = c["challenge_id"]
    page = gateway.client.get(f"/providers/{agent.id}").text
    assert f'<a class="id" href="/challenges/{cid}" title="{cid}">{cid[:12]}…</a>' in page
    index = gateway.client.get("/").text
    assert f'<span class="id" title="{agent.id}">{agent.id[:12]}…</span>' in index
    assert ".id { font-family: ui-monospace, monospace; font-size: 12px; white-space: nowrap; }" in index
