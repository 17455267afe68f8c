"""verifier/webhooks.py: the Standard Webhooks signature (the spec's vector, the worked example of
docs/api.md and its receiver code), the retry schedule, the URL rule and the event payloads."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from pathlib import Path

import pytest
from gpuproof.verifier import webhooks
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import load_vectors

DOC = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
VECTORS = load_vectors("webhooks.json")


def stdlib_signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The spec's rule, written here without verifier/webhooks.py."""
    key = base64.b64decode(secret[len("whsec_"):])
    return "v1," + base64.b64encode(hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body,
                                             hashlib.sha256).digest()).decode()


def headers_of(v: dict) -> dict:
    return {"webhook-id": v["id"], "webhook-timestamp": str(v["timestamp"]), "webhook-signature": v["signature"]}


@pytest.mark.parametrize("v", VECTORS["vectors"], ids=lambda v: v["desc"])
def test_the_standard_webhooks_vector(v):
    body = v["body"].encode()
    assert webhooks.sign(v["secret"], v["id"], v["timestamp"], body) == v["signature"]
    assert stdlib_signature(v["secret"], v["id"], v["timestamp"], body) == v["signature"]
    assert webhooks.verify(v["secret"], headers_of(v), body, now=v["timestamp"]) == v["id"]
    # a receiver accepts any one of several space-separated signatures (the spec's key rotation)
    rotated = headers_of(v) | {"webhook-signature": f"v1,{'A' * 44} {v['signature']}"}
    assert webhooks.verify(v["secret"], rotated, body, now=v["timestamp"]) == v["id"]


@pytest.mark.parametrize("v", VECTORS["negatives"], ids=lambda v: v["desc"])
def test_mutations_of_the_vector_are_refused(v):
    with pytest.raises(webhooks.WebhookError, match=v["error"]):
        webhooks.verify(v["secret"], headers_of(v), v["body"].encode(), now=v["timestamp"])


def test_stale_or_missing_headers_are_refused():
    v = VECTORS["vectors"][0]
    with pytest.raises(webhooks.WebhookError, match="tolerance"):
        webhooks.verify(v["secret"], headers_of(v), v["body"].encode(), now=v["timestamp"] + 301)
    with pytest.raises(webhooks.WebhookError, match="expected the headers"):
        webhooks.verify(v["secret"], {"webhook-id": v["id"]}, v["body"].encode(), now=v["timestamp"])
    with pytest.raises(webhooks.WebhookError, match="not base64"):
        webhooks.sign("whsec_not base64!", "id", 1, b"")


def doc_example() -> dict[str, str]:
    block = re.search(r"```text\n(secret .+?)\n```", DOC, flags=re.S)
    assert block, "docs/api.md lost its worked webhook example"
    return dict(re.split(r"\s{2,}", line, maxsplit=1) for line in block.group(1).splitlines())


def test_the_worked_example_in_the_docs():
    ex = doc_example()
    body, stamp = ex["body"].encode(), int(ex["webhook-timestamp"])
    assert base64.b64decode(ex["secret"].removeprefix("whsec_")).hex() == ex["key (hex)"]
    assert stdlib_signature(ex["secret"], ex["webhook-id"], stamp, body) == ex["webhook-signature"]
    assert webhooks.sign(ex["secret"], ex["webhook-id"], stamp, body) == ex["webhook-signature"]
    head, tail = ex["signed"].split(" ... ")  # the signed content, abridged in the middle
    signed = f"{ex['webhook-id']}.{stamp}.{ex['body']}"
    assert signed.startswith(head) and signed.endswith(tail) and len(head) > 50
    # the body is what the gateway builds for such a settlement
    data = json.loads(body)["data"]
    event = webhooks.settlement_event(data["job_id"], data["provider_id"], data["decision"], data["reasons"],
                                      data["final"], data["renter_commitment"], 1764504000.25)
    assert event.body() == body


def test_the_docs_receiver_code_accepts_the_example_and_refuses_a_changed_byte(monkeypatch):
    code = next(c for c in re.findall(r"```python\n(.+?)\n```", DOC, flags=re.S) if "def verify(" in c)
    scope: dict = {}
    exec(code, scope)  # noqa: S102 - the documentation's own snippet, from this repository
    ex = doc_example()
    headers = {"webhook-id": ex["webhook-id"], "webhook-timestamp": ex["webhook-timestamp"],
               "webhook-signature": ex["webhook-signature"]}
    monkeypatch.setattr(scope["time"], "time", lambda: int(ex["webhook-timestamp"]) + 10)
    assert scope["verify"](ex["secret"], headers, ex["body"].encode())
    assert not scope["verify"](ex["secret"], headers, ex["body"].replace("hold", "release").encode())
    monkeypatch.setattr(scope["time"], "time", lambda: int(ex["webhook-timestamp"]) + 301)
    assert not scope["verify"](ex["secret"], headers, ex["body"].encode())


@given(secret=st.binary(min_size=24, max_size=64), msg_id=st.text(st.characters(codec="ascii"), max_size=40),
       timestamp=st.integers(0, 2**40), body=st.binary(max_size=200), flip=st.integers(0, 10_000))
def test_any_changed_body_byte_is_refused(secret, msg_id, timestamp, body, flip):
    text = "whsec_" + base64.b64encode(secret).decode()
    signed = webhooks.headers(text, msg_id or "x", timestamp, body)
    assert webhooks.verify(text, signed, body, now=timestamp) == (msg_id or "x")
    if body:
        changed = bytearray(body)
        changed[flip % len(body)] ^= 1
        with pytest.raises(webhooks.WebhookError):
            webhooks.verify(text, signed, bytes(changed), now=timestamp)


def test_new_secrets_are_32_random_bytes():
    a, b = webhooks.new_secret(), webhooks.new_secret()
    assert a != b and len(webhooks.secret_key(a)) == 32 and a.startswith("whsec_")


@given(retry=st.integers(1, 100), draw=st.floats(0, 1, exclude_max=True))
def test_retry_delays_grow_exponentially_within_their_jitter_and_cap(retry, draw):
    delay = webhooks.retry_delay(retry, 10.0, 3600.0, draw)
    step = min(3600.0, 10.0 * 2 ** (retry - 1))
    assert step / 2 <= delay <= step  # the draw is below 1; rounding may reach the step itself
    assert webhooks.retry_delay(retry, 10.0, 3600.0, 0.0) == step / 2


def test_retry_schedule_and_its_precondition():
    assert [webhooks.retry_delay(r, 10, 3600, 0.5) for r in (1, 2, 3, 4)] == [7.5, 15.0, 30.0, 60.0]
    assert webhooks.retry_delay(30, 10, 3600, 0.999) < 3600
    with pytest.raises(webhooks.WebhookError, match="retry: expected 1 or more, got 0"):
        webhooks.retry_delay(0, 10, 3600, 0.5)


@pytest.mark.parametrize("url, error", [
    ("https://market.example/hooks?x=1", None),
    ("http://127.0.0.1:8080/h", None),
    ("ftp://market.example/", "expected an http or https URL, got the scheme 'ftp'"),
    ("market.example/hooks", "got the scheme 'none'"),
    ("https:///path", "expected a host"),
    ("https://a:b@market.example/", "credentials"),
    ("https://market.example/\x00", "control"),
    ("https://market.example:70000/", "not a URL"),
    ("https://market.example/#x", "fragment"),
    ("https://market.example/" + "a" * 2000, "expected 1 to 2000 characters"),
    ("", "expected 1 to 2000 characters"),
])
def test_endpoint_urls(url, error):
    if error is None:
        assert webhooks.check_url(url) == url
    else:
        with pytest.raises(webhooks.WebhookError, match=re.escape(error)):
            webhooks.check_url(url)


def test_event_payloads():
    event = webhooks.trust_event("p" * 32, "unproven", "suspect", 0.25, 0.01, ["failed"], ["j2", "j1"], 0.0)
    assert json.loads(event.body()) == {"type": "trust", "timestamp": "1970-01-01T00:00:00.000Z",
                                        "data": {"provider_id": "p" * 32, "previous_status": "unproven",
                                                 "status": "suspect", "score": 0.25, "lower_bound": 0.01,
                                                 "reasons": ["failed"], "jobs": ["j1", "j2"]}}
    verdict = webhooks.verdict_event("p" * 32, "challenge", "c" * 32, {"outcome": "pass"}, "pass", [], 1.5)
    assert verdict.body().startswith(b'{"data":{"id":"ccc') and b" " not in verdict.body()
    with pytest.raises(webhooks.WebhookError, match="expected one of verdict, settlement, trust, got 'refund'"):
        webhooks.Event("refund", 0.0)
