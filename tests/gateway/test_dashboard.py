"""The dashboard's HTML: content, sorting, filtering, and everything a provider controls escaped."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

from gateway.client import registration
from tests.gateway.test_api import Agent
from verifier import signatures

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
    assert '<svg id="score-chart"' in provider and provider.count("<polyline") == 2
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
    body = registration(key, EVIL[:100], [{"model": EVIL[:200], "vram_gib": 8}])
    r = gateway.client.post("/v1/providers", json=body)
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    for path in ("/", f"/providers/{pid}", "/log", f"/?model={EVIL[:50]}"):
        page = gateway.client.get(path).text
        parsed = Elements(page)
        assert "script" not in parsed.tags and "img" not in parsed.tags, path
        assert not any(a.startswith("on") for a in parsed.attrs), path
        assert "<script>alert" not in page and "<img src=x" not in page, path
    page = gateway.client.get(f"/providers/{pid}").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and EVIL[:100] in html.unescape(page)  # shown as text
