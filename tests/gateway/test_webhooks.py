"""Webhooks (issue 19) against a real HTTP receiver on loopback, on SQLite and PostgreSQL: signed deliveries
(checked here with the stdlib, written from the Standard Webhooks spec), retries through a receiver that is
down and then failing, redelivery, tenancy, bad input, and deliveries that outlive the gateway process."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from fastapi.testclient import TestClient
from gpuproof.gateway import admin, maintenance
from gpuproof.gateway import webhooks as hooks
from gpuproof.gateway.app import create_app
from gpuproof.gateway.db import Database
from gpuproof.gateway.models import SegmentAudit, WebhookAttempt, WebhookDelivery
from gpuproof.gateway.settings import Settings
from sqlalchemy import select

from tests.gateway.test_api import Agent, assert_problem
from tests.support.server import Server

WAIT_S = 30.0  # the most any event below is waited for; each normally comes within a fraction of a second


def spec_signature(secret: str, msg_id: str, timestamp: str, body: bytes) -> str:
    """Standard Webhooks, "Signature scheme", written here independently of verifier/webhooks.py."""
    key = base64.b64decode(secret.split("_", 1)[1])
    mac = hmac.new(key, msg_id.encode() + b"." + timestamp.encode() + b"." + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def assert_signed(secret: str, request: dict) -> None:
    h = request["headers"]
    assert abs(int(h["webhook-timestamp"]) - time.time()) < 300
    expected = spec_signature(secret, h["webhook-id"], h["webhook-timestamp"], request["body"])
    assert any(hmac.compare_digest(expected, s) for s in h["webhook-signature"].split(" ")), h


class Receiver:
    """A webhook receiver on a loopback port: down until `start`, then answering each POST with the next of
    `statuses` (then 204), recording every request (headers, body, the status it got). TRICKLE answers
    one byte of its header every 0.1 s for 3 s: each read is quick, the answer is not."""

    TRICKLE = 0

    def __init__(self, statuses: list[int] | None = None) -> None:
        with socket.socket() as s:  # reserve a port number; nothing listens on it until start()
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/hooks"
        self.statuses = list(statuses or [])
        self.requests: list[dict] = []
        self.changed = threading.Condition()
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with receiver.changed:
                    status = receiver.statuses.pop(0) if receiver.statuses else 204
                    receiver.requests.append({"headers": {k.lower(): v for k, v in self.headers.items()},
                                              "body": body, "path": self.path, "status": status})
                    receiver.changed.notify_all()
                if status == Receiver.TRICKLE:
                    for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 30:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(0.1)
                    return
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def wait_for(self, done: Callable[[list[dict]], bool]) -> list[dict]:
        with self.changed:
            assert self.changed.wait_for(lambda: done(self.requests), timeout=WAIT_S), self.requests
            return list(self.requests)


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.stop()


def hook_settings(database_url: str, tmp_path, **overrides) -> Settings:
    fields = {"data_dir": tmp_path / "data", "database_url": database_url, "verify_test_shape": "16,256,64,3",
              "challenge_interval_s": 3600, "provider_rate_per_s": 1000, "ip_rate_per_s": 10000,
              "maintenance_interval_s": 0, "webhook_poll_s": 0.02, "webhook_backoff_base_s": 0.01,
              "webhook_backoff_max_s": 0.05, "webhook_max_attempts": 30, "webhook_timeout_s": 5,
              "webhook_allow_private": True}  # the receivers here are on loopback
    return Settings(**(fields | overrides))


class Gw:
    def __init__(self, client: TestClient, app) -> None:  # noqa: ANN001
        self.client, self.app = client, app


@pytest.fixture
def gw(database_url, tmp_path):
    app = create_app(hook_settings(database_url, tmp_path))
    with TestClient(app) as client:
        yield Gw(client, app)


def tenant_key(gw, tenant: str, scopes=("jobs", "settle")) -> dict:  # noqa: ANN001
    key = admin.create_api_key(gw.app.state.gp.db, f"{tenant}-key", list(scopes), tenant=tenant)
    return {"Authorization": f"Bearer {key}"}


def register(gw, auth: dict, url: str, events=("verdict", "settlement", "trust")) -> dict:  # noqa: ANN001
    r = gw.client.post("/v1/webhooks", json={"url": url, "events": list(events), "description": "test"},
                       headers=auth)
    assert r.status_code == 201, r.text
    return r.json()


def open_job(gw, auth: dict, agent: Agent) -> str:  # noqa: ANN001
    r = gw.client.post("/v1/jobs", json={"renter_ref": "order-1", "provider_id": agent.id, "price_ref": "usd:1"},
                       headers=auth)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def wait_delivery(gw, auth: dict, endpoint_id: str, done: Callable[[dict], bool]) -> dict:  # noqa: ANN001
    """Poll the delivery log until its newest delivery satisfies `done` (every WAIT_S at most)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        items = gw.client.get(f"/v1/webhooks/{endpoint_id}/deliveries", headers=auth).json()["items"]
        if items:
            detail = gw.client.get(f"/v1/webhooks/{endpoint_id}/deliveries/{items[0]['id']}", headers=auth).json()
            if done(detail):
                return detail
        assert time.monotonic() < deadline, items
        time.sleep(0.02)


def test_a_settlement_is_delivered_signed_and_the_secret_is_shown_once(gw, receiver):
    receiver.start()
    auth = tenant_key(gw, "market")
    endpoint = register(gw, auth, receiver.url, events=["settlement"])
    assert endpoint["secret"].startswith("whsec_") and endpoint["events"] == ["settlement"]
    assert "secret" not in gw.client.get(f"/v1/webhooks/{endpoint['id']}", headers=auth).json()
    assert all("secret" not in e for e in gw.client.get("/v1/webhooks", headers=auth).json())
    agent = Agent(gw)
    job_id = open_job(gw, auth, agent)
    decision = gw.client.post(f"/v1/jobs/{job_id}/settlement", headers=auth).json()
    (request,) = receiver.wait_for(lambda rs: len(rs) == 1)
    assert_signed(endpoint["secret"], request)
    assert request["headers"]["content-type"] == "application/json" and request["path"] == "/hooks"
    payload = json.loads(request["body"])
    assert payload["type"] == "settlement" and payload["timestamp"].endswith("Z")
    assert payload["data"] == {"job_id": job_id, "provider_id": agent.id, "decision": decision["decision"],
                               "reasons": decision["reasons"], "final": False,
                               "renter_commitment": decision["renter_commitment"]}
    detail = wait_delivery(gw, auth, endpoint["id"], lambda d: d["state"] == "delivered")
    assert detail["id"] == request["headers"]["webhook-id"] and detail["payload"] == payload
    assert [a["status"] for a in detail["history"]] == [204]
    # the same decision again changes nothing: no new event
    gw.client.post(f"/v1/jobs/{job_id}/settlement", headers=auth)
    assert gw.client.get(f"/v1/webhooks/{endpoint['id']}/deliveries", headers=auth).json()["total"] == 1
    # the maintenance sweep deletes it with its attempts after the retention period, not before
    state = gw.app.state.gp
    assert maintenance.sweep(state, time.time()).webhook_deliveries == 0
    assert maintenance.sweep(state, time.time() + state.settings.webhook_retention_s + 1).webhook_deliveries == 1
    assert gw.client.get(f"/v1/webhooks/{endpoint['id']}/deliveries", headers=auth).json()["total"] == 0
    with state.db.reader() as s:
        assert s.execute(select(WebhookAttempt.id)).all() == []


def test_a_receiver_down_then_failing_gets_the_event_after_retries_with_one_webhook_id(gw, receiver):
    receiver.statuses = [500, 503]
    auth = tenant_key(gw, "market")
    endpoint = register(gw, auth, receiver.url)
    agent = Agent(gw)
    open_job(gw, auth, agent)
    agent.full_round()  # a verdict on the job's provider
    # nothing listens yet: connection refused, retried
    down = wait_delivery(gw, auth, endpoint["id"], lambda d: d["attempts"] >= 2)
    assert down["state"] == "pending" and all(a["status"] is None and a["error"] for a in down["history"])
    receiver.start()
    requests = receiver.wait_for(lambda rs: len(rs) >= 3)
    assert [r["status"] for r in requests[:3]] == [500, 503, 204]
    assert {r["headers"]["webhook-id"] for r in requests} == {down["id"]}
    assert len({r["body"] for r in requests}) == 1
    for r in requests:
        assert_signed(endpoint["secret"], r)
    event = json.loads(requests[0]["body"])
    assert event["type"] == "verdict" and event["data"]["outcome"] == "pass"
    assert event["data"]["provider_id"] == agent.id and event["data"]["subject"] == "challenge"
    done = wait_delivery(gw, auth, endpoint["id"], lambda d: d["state"] == "delivered")
    statuses = [a["status"] for a in done["history"]]
    assert statuses[-3:] == [500, 503, 204] and all(s is None for s in statuses[:-3]) and len(statuses) >= 4
    assert done["attempts"] == len(statuses) and done["last_status"] == 204 and done["next_attempt_at"] is None


def test_a_failed_delivery_is_redelivered_with_the_same_id(database_url, tmp_path, receiver):
    app = create_app(hook_settings(database_url, tmp_path, webhook_max_attempts=3))
    receiver.statuses = [500, 500, 500]
    receiver.start()
    with TestClient(app) as client:
        gw = Gw(client, app)
        auth = tenant_key(gw, "market")
        endpoint = register(gw, auth, receiver.url, events=["settlement"])
        job_id = open_job(gw, auth, Agent(gw))
        client.post(f"/v1/jobs/{job_id}/settlement", headers=auth)
        failed = wait_delivery(gw, auth, endpoint["id"], lambda d: d["state"] == "failed")
        assert [a["status"] for a in failed["history"]] == [500, 500, 500] and failed["next_attempt_at"] is None
        url = f"/v1/webhooks/{endpoint['id']}/deliveries/{failed['id']}/redeliver"
        queued = client.post(url, headers=auth)
        assert queued.status_code == 202 and queued.json()["state"] == "pending"
        requests = receiver.wait_for(lambda rs: len(rs) == 4)
        assert {r["headers"]["webhook-id"] for r in requests} == {failed["id"]}
        assert_signed(endpoint["secret"], requests[-1])
        done = wait_delivery(gw, auth, endpoint["id"], lambda d: d["state"] == "delivered")
        assert done["attempts"] == 4 and [a["status"] for a in done["history"]] == [500, 500, 500, 204]
        # a delivered one may be sent again too (a receiver that lost it)
        assert client.post(url, headers=auth).status_code == 202
        assert receiver.wait_for(lambda rs: len(rs) == 5)[-1]["headers"]["webhook-id"] == failed["id"]


def test_a_cheat_sends_verdict_and_trust_events_to_tenants_with_jobs_on_the_provider_only(gw, receiver):
    receiver.start()
    mine, other = tenant_key(gw, "market"), tenant_key(gw, "elsewhere")
    endpoint = register(gw, mine, receiver.url, events=["verdict", "trust"])
    register(gw, other, receiver.url + "?other", events=["verdict", "trust", "settlement"])  # no job on it
    agent = Agent(gw)
    job_id = open_job(gw, mine, agent)
    c = agent.next().json()
    params, roots = agent.prove(c)
    req = agent.post(f"/v1/challenges/{c['challenge_id']}/commitment", {"roots": [r.hex() for r in roots]}).json()
    bad = agent.openings(params, roots, req["pairs"])
    bad["openings"][0]["path"][0] = "00" * 32
    assert agent.post(f"/v1/challenges/{c['challenge_id']}/openings", bad).json()["outcome"] == "fail"
    requests = receiver.wait_for(lambda rs: len(rs) == 2)
    events = {json.loads(r["body"])["type"]: json.loads(r["body"])["data"] for r in requests}
    assert {r["path"] for r in requests} == {"/hooks"}  # none for the other tenant
    assert events["verdict"]["id"] == c["challenge_id"] and events["verdict"]["outcome"] == "fail"
    assert events["verdict"]["jobs"] == [job_id]
    assert events["trust"]["previous_status"] == "unproven" and events["trust"]["status"] == "suspect"
    assert events["trust"]["jobs"] == [job_id] and events["trust"]["reasons"]
    for r in requests:
        assert_signed(endpoint["secret"], r)


def test_another_tenant_sees_none_of_the_endpoints_or_deliveries(gw, receiver):
    receiver.start()
    mine, other = tenant_key(gw, "market"), tenant_key(gw, "elsewhere")
    endpoint = register(gw, mine, receiver.url, events=["settlement"])
    job_id = open_job(gw, mine, Agent(gw))
    gw.client.post(f"/v1/jobs/{job_id}/settlement", headers=mine)
    delivery = wait_delivery(gw, mine, endpoint["id"], lambda d: d["state"] == "delivered")
    base = f"/v1/webhooks/{endpoint['id']}"
    for method, path in [("GET", base), ("DELETE", base), ("GET", f"{base}/deliveries"),
                         ("GET", f"{base}/deliveries/{delivery['id']}"),
                         ("POST", f"{base}/deliveries/{delivery['id']}/redeliver")]:
        assert_problem(gw.client.request(method, path, headers=other), 404, "no webhook endpoint")
    assert gw.client.get("/v1/webhooks", headers=other).json() == []
    # a delivery id under another of my endpoints is not found either
    second = register(gw, mine, receiver.url, events=["verdict"])
    assert_problem(gw.client.get(f"/v1/webhooks/{second['id']}/deliveries/{delivery['id']}", headers=mine), 404,
                   "no delivery")
    assert_problem(gw.client.get("/v1/webhooks", headers=tenant_key(gw, "market", scopes=["settle"])), 403,
                   "jobs")
    assert_problem(gw.client.get("/v1/webhooks"), 401, "Bearer")
    # deleting removes the endpoint and its log
    assert gw.client.delete(base, headers=mine).status_code == 204
    assert_problem(gw.client.get(base, headers=mine), 404, "no webhook endpoint")
    assert [e["id"] for e in gw.client.get("/v1/webhooks", headers=mine).json()] == [second["id"]]
    with gw.app.state.gp.db.reader() as s:
        assert s.execute(select(WebhookDelivery.id)).all() == []


BAD_ENDPOINTS = [
    ({"url": "ftp://example.com/x", "events": ["verdict"]}, "http or https"),
    ({"url": "javascript:alert(1)", "events": ["verdict"]}, "http or https"),
    ({"url": "http://", "events": ["verdict"]}, "expected a host"),
    ({"url": "https://user:pw@example.com/", "events": ["verdict"]}, "credentials"),
    ({"url": "https://example.com/a b", "events": ["verdict"]}, "spaces"),
    ({"url": "https://example.com:99999/", "events": ["verdict"]}, "not a URL"),
    ({"url": "https://example.com/#frag", "events": ["verdict"]}, "fragment"),
    ({"url": "https://example.com/" + "a" * 2000, "events": ["verdict"]}, "at most 2000"),
    ({"url": "https://example.com/", "events": ["refund"]}, "'verdict', 'settlement' or 'trust'"),
    ({"url": "https://example.com/", "events": []}, "at least 1"),
    ({"url": "https://example.com/", "events": ["trust", "trust"]}, "named twice"),
    ({"url": "https://example.com/", "events": ["trust"], "description": "a\nb"}, "description"),
    ({"url": "https://example.com/", "events": ["trust"], "secret": "mine"}, "secret"),
    ({"events": ["trust"]}, "url"),
]


def test_bad_endpoints_are_422_with_the_reason(gw):
    auth = tenant_key(gw, "market")
    for body, fragment in BAD_ENDPOINTS:  # one gateway for all: each makes a fresh database otherwise
        r = gw.client.post("/v1/webhooks", json=body, headers=auth)
        assert_problem(r, 422, "")
        assert fragment in json.dumps(r.json()), (body, r.json())
    assert gw.client.get("/v1/webhooks", headers=auth).json() == []


def test_bad_ids_and_queries_are_422_and_the_endpoint_count_is_limited(database_url, tmp_path):
    with TestClient(create_app(hook_settings(database_url, tmp_path, webhook_max_endpoints=2))) as client:
        gw = Gw(client, client.app)
        auth = tenant_key(gw, "market")
        assert_problem(client.get("/v1/webhooks/not-an-id", headers=auth), 422, "")
        first = register(gw, auth, "https://example.com/1")
        assert_problem(client.get(f"/v1/webhooks/{first['id']}/deliveries?state=lost", headers=auth), 422, "state")
        assert_problem(client.get(f"/v1/webhooks/{first['id']}/deliveries?limit=0", headers=auth), 422, "limit")
        register(gw, auth, "https://example.com/2")
        assert_problem(client.post("/v1/webhooks", json={"url": "https://example.com/3", "events": ["trust"]},
                                   headers=auth), 409, "the most it may have is 2")
        register(gw, tenant_key(gw, "elsewhere"), "https://example.com/3")  # the limit is per tenant


def test_deliveries_pending_in_the_outbox_are_sent_by_the_next_gateway_process(database_url, tmp_path, receiver):
    receiver.start()
    # a gateway that sends nothing (webhook_poll_s=0: as if it stopped right after the state change)
    with TestClient(create_app(hook_settings(database_url, tmp_path, webhook_poll_s=0))) as client:
        first = Gw(client, client.app)
        auth = tenant_key(first, "market")
        endpoint = register(first, auth, receiver.url, events=["settlement"])
        job_id = open_job(first, auth, Agent(first))
        client.post(f"/v1/jobs/{job_id}/settlement", headers=auth)
        pending = client.get(f"/v1/webhooks/{endpoint['id']}/deliveries", headers=auth).json()["items"]
        assert [d["state"] for d in pending] == ["pending"] and pending[0]["attempts"] == 0
        state = first.app.state.gp  # a pending delivery is never swept, however old
        assert maintenance.sweep(state, time.time() + state.settings.webhook_retention_s + 1).webhook_deliveries == 0
    assert receiver.requests == []
    with TestClient(create_app(hook_settings(database_url, tmp_path))) as client:
        second = Gw(client, client.app)
        (request,) = receiver.wait_for(lambda rs: len(rs) == 1)
        assert request["headers"]["webhook-id"] == pending[0]["id"]
        assert json.loads(request["body"])["data"]["job_id"] == job_id
        assert_signed(endpoint["secret"], request)
        wait_delivery(second, auth, endpoint["id"], lambda d: d["state"] == "delivered")


def test_a_training_segment_verdict_is_a_verdict_event(gw, receiver):
    """A segment audit whose evidence never came is failed at settlement (audits.judge): a `verdict` event
    with subject "segment"."""
    receiver.start()
    auth = tenant_key(gw, "market")
    register(gw, auth, receiver.url, events=["verdict"])
    agent = Agent(gw)
    job_id = open_job(gw, auth, agent)
    now = time.time()
    with gw.app.state.gp.db.writer() as s:
        s.add(SegmentAudit(id="a" * 32, job_id=job_id, provider_id=agent.id, start_step=0, end_step=50,
                           chunks=[], drawn_at=now - 100, deadline_at=now - 10, state="requested"))
        s.commit()
    gw.client.post(f"/v1/jobs/{job_id}/settlement", headers=auth)
    (request,) = receiver.wait_for(lambda rs: len(rs) == 1)
    data = json.loads(request["body"])["data"]
    assert data["subject"] == "segment" and data["id"] == "a" * 32 and data["outcome"] == "fail"
    assert "did not arrive before the deadline" in data["verdict"]["reason"] and data["jobs"] == [job_id]


def test_replicas_share_the_outbox_and_send_each_delivery_once(database_url, tmp_path, receiver):
    receiver.start()
    with TestClient(create_app(hook_settings(database_url, tmp_path))) as one, \
            TestClient(create_app(hook_settings(database_url, tmp_path))) as two:
        first = Gw(one, one.app)
        auth = tenant_key(first, "market")
        endpoint = register(first, auth, receiver.url, events=["settlement"])
        agent = Agent(first)
        jobs = [open_job(first, auth, agent) for _ in range(8)]
        for i, job_id in enumerate(jobs):  # settled through either replica
            (one if i % 2 else two).post(f"/v1/jobs/{job_id}/settlement", headers=auth)
        receiver.wait_for(lambda rs: len(rs) >= 8)
        deadline = time.monotonic() + WAIT_S
        while True:  # every delivery recorded: each was claimed by one replica, which sent it once
            log = one.get(f"/v1/webhooks/{endpoint['id']}/deliveries?state=delivered", headers=auth).json()
            if log["total"] == 8 or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert log["total"] == 8 and [d["attempts"] for d in log["items"]] == [1] * 8
        ids = [r["headers"]["webhook-id"] for r in receiver.requests]
        assert len(ids) == len(set(ids)) == 8
        assert sorted(json.loads(r["body"])["data"]["job_id"] for r in receiver.requests) == sorted(jobs)


def test_an_answer_trickling_in_is_cut_off_at_the_timeout_and_retried(database_url, tmp_path, receiver):
    receiver.statuses = [Receiver.TRICKLE]
    receiver.start()
    with TestClient(create_app(hook_settings(database_url, tmp_path, webhook_timeout_s=0.5))) as client:
        gw = Gw(client, client.app)
        auth = tenant_key(gw, "market")
        endpoint = register(gw, auth, receiver.url, events=["settlement"])
        job_id = open_job(gw, auth, Agent(gw))
        client.post(f"/v1/jobs/{job_id}/settlement", headers=auth)
        done = wait_delivery(gw, auth, endpoint["id"], lambda d: d["state"] == "delivered")
        first, second = done["history"]
        assert first["status"] is None and first["error"] == "no answer within 0.5 s" and first["duration_s"] < 2
        assert second["status"] == 204


def test_a_delivery_claimed_by_a_process_that_died_is_sent_by_another_after_its_lease(database_url, tmp_path,
                                                                                       receiver, monkeypatch):
    monkeypatch.setattr(hooks, "LEASE_SLACK_S", 0.5)  # the lease: the attempt's timeout (0.5 s) plus this
    receiver.start()
    settings = hook_settings(database_url, tmp_path, webhook_poll_s=0, webhook_timeout_s=0.5)
    with TestClient(create_app(settings)) as client:
        gw = Gw(client, client.app)
        auth = tenant_key(gw, "market")
        endpoint = register(gw, auth, receiver.url, events=["settlement"])
        client.post(f"/v1/jobs/{open_job(gw, auth, Agent(gw))}/settlement", headers=auth)
        claimed_at = time.time()
        (claimed,) = hooks.claim(gw.app.state.gp.db, settings, claimed_at)  # ... and the claimer dies here
    with TestClient(create_app(hook_settings(database_url, tmp_path))) as client:
        (request,) = receiver.wait_for(lambda rs: len(rs) == 1)
        assert time.time() >= claimed_at + 1.0  # not before the lease ended
        assert request["headers"]["webhook-id"] == claimed.id
        assert_signed(endpoint["secret"], request)


@pytest.mark.parametrize("url, reason", [
    ("http://127.0.0.1:8080/hooks", "loopback"),
    ("http://localhost/hooks", "loopback"),
    ("http://[::1]/hooks", "loopback"),
    ("http://[::ffff:127.0.0.1]/hooks", "loopback"),
    ("http://10.1.2.3/hooks", "private"),
    ("https://192.168.0.10/hooks", "private"),
    ("http://169.254.169.254/latest/meta-data", "link-local"),  # a cloud's metadata service
    ("http://0.0.0.0/hooks", "unspecified"),
    ("http://100.64.0.1/hooks", "not a public address"),  # carrier-grade NAT
    # review of 2026-11-30: these passed before
    ("http://[fec0::1]/hooks", "site-local"),
    ("http://[2002:7f00:1::1]/hooks", "127.0.0.1, a loopback"),  # 6to4 wrapping 127.0.0.1
    ("http://[2002:c0a8:101::1]/hooks", "192.168.1.1, a private"),  # 6to4 wrapping 192.168.1.1
])
def test_webhooks_to_private_addresses_are_refused_unless_allowed(database_url, tmp_path, url, reason):
    """SSRF: an endpoint whose host resolves to the gateway's own machine or network is refused at
    registration (422, naming the address) unless GPUPROOF_WEBHOOK_ALLOW_PRIVATE allows it."""
    app = create_app(hook_settings(database_url, tmp_path, webhook_allow_private=False))
    with TestClient(app) as client:
        gw = Gw(client, app)
        auth = tenant_key(gw, "market")
        refused = client.post("/v1/webhooks", json={"url": url, "events": ["verdict"]}, headers=auth)
        assert_problem(refused, 422, reason)
        assert "GPUPROOF_WEBHOOK_ALLOW_PRIVATE" in refused.json()["detail"]
        register(gw, auth, "https://93.184.215.14/hooks")  # a public address is taken
        assert len(client.get("/v1/webhooks", headers=auth).json()) == 1


def test_an_attempt_to_a_private_address_is_refused_when_sent(receiver):
    """Checked again when sent (a name may resolve elsewhere by then: DNS rebinding): the delivery client
    resolves, checks and dials the checked address itself, so nothing reaches a loopback receiver, and the
    attempt's error says why; with the setting, the same attempt is delivered."""
    receiver.start()
    outgoing = hooks.Outgoing("d" * 32, receiver.url.replace("127.0.0.1", "localhost"), ("whsec_" + "A" * 32,),
                              b'{"type":"test"}')

    async def send(allow: bool) -> hooks.Outcome:
        async with hooks.delivery_client(Settings(webhook_allow_private=allow, webhook_timeout_s=5)) as client:
            return await hooks.attempt(client, outgoing, 5)

    outcome = asyncio.run(send(False))
    assert outcome.status is None and "loopback" in (outcome.error or ""), outcome
    assert receiver.requests == []
    outcome = asyncio.run(send(True))
    assert outcome.ok, outcome
    assert len(receiver.requests) == 1


def signed_by(secret: str, request: dict) -> bool:
    h = request["headers"]
    expected = spec_signature(secret, h["webhook-id"], h["webhook-timestamp"], request["body"])
    return any(hmac.compare_digest(expected, s) for s in h["webhook-signature"].split(" "))


def test_a_rotated_secret_signs_alongside_the_new_one_for_its_overlap_then_stops(gw, receiver):
    """Secret rotation (Standard Webhooks: several space-separated signatures): the new secret is shown once;
    deliveries carry a signature by the new and by the previous secret until the overlap ends, then by the
    new one alone. Another tenant cannot rotate it (404, as for none)."""
    receiver.start()
    auth = tenant_key(gw, "market")
    endpoint = register(gw, auth, receiver.url, events=["settlement"])
    agent = Agent(gw)
    job_id = open_job(gw, auth, agent)
    settle = lambda: gw.client.post(f"/v1/jobs/{job_id}/settlement", headers=auth)  # noqa: E731
    assert_problem(gw.client.post(f"/v1/webhooks/{endpoint['id']}/secret", headers=tenant_key(gw, "other")), 404, "")
    rotated = gw.client.post(f"/v1/webhooks/{endpoint['id']}/secret", headers=auth)
    assert rotated.status_code == 200, rotated.text
    new, until = rotated.json()["secret"], rotated.json()["previous_valid_until"]
    assert new.startswith("whsec_") and new != endpoint["secret"]
    assert until == pytest.approx(time.time() + gw.app.state.gp.settings.webhook_secret_overlap_s, abs=60)
    assert "secret" not in json.dumps(gw.client.get(f"/v1/webhooks/{endpoint['id']}", headers=auth).json())
    settle()
    (first,) = receiver.wait_for(lambda rs: len(rs) == 1)
    assert len(first["headers"]["webhook-signature"].split(" ")) == 2
    assert signed_by(new, first) and signed_by(endpoint["secret"], first)
    # rotate again with no overlap: only the newest secret signs; both older ones are refused
    again = gw.client.post(f"/v1/webhooks/{endpoint['id']}/secret", json={"overlap_s": 0}, headers=auth).json()
    assert again["previous_valid_until"] is None
    delivery = gw.client.get(f"/v1/webhooks/{endpoint['id']}/deliveries", headers=auth).json()["items"][0]
    gw.client.post(f"/v1/webhooks/{endpoint['id']}/deliveries/{delivery['id']}/redeliver", headers=auth)
    second = receiver.wait_for(lambda rs: len(rs) == 2)[1]
    assert second["headers"]["webhook-id"] == first["headers"]["webhook-id"]
    assert signed_by(again["secret"], second) and len(second["headers"]["webhook-signature"].split(" ")) == 1
    assert not signed_by(new, second) and not signed_by(endpoint["secret"], second)
    for bad in ({"overlap_s": -1}, {"overlap_s": 8 * 86400}, {"overlap_s": "soon"}, {"keep": 1}):
        assert_problem(gw.client.post(f"/v1/webhooks/{endpoint['id']}/secret", json=bad, headers=auth), 422, "")


def test_registrations_at_once_never_pass_the_endpoint_limit(database_url, tmp_path):
    """Eight registrations of one tenant sent at once against a limit of 3: exactly 3 are created, the rest
    get 409 (each counted the tenant's endpoints before any was stored, and all passed, before the tenant's
    registrations were made to take turns)."""
    server = Server(database_url, tmp_path / "gw", GPUPROOF_WEBHOOK_MAX_ENDPOINTS="3",
                    GPUPROOF_WEBHOOK_ALLOW_PRIVATE="1").start()
    try:
        db = Database(database_url)
        key = admin.create_api_key(db, "market-key", ["jobs"], tenant="market")
        db.engine.dispose()
        auth = {"Authorization": f"Bearer {key}"}
        barrier = threading.Barrier(8)

        def create(i: int) -> int:
            with httpx.Client(base_url=server.base, timeout=60) as c:
                barrier.wait()
                return c.post("/v1/webhooks", json={"url": f"https://example.com/{i}", "events": ["trust"]},
                              headers=auth).status_code

        with ThreadPoolExecutor(8) as pool:
            codes = sorted(pool.map(create, range(8)))
        listed = httpx.get(f"{server.base}/v1/webhooks", headers=auth).json()
    finally:
        server.stop()
    assert codes == [201] * 3 + [409] * 5, codes
    assert len(listed) == 3
