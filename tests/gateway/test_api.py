"""The gateway API on SQLite and PostgreSQL: the provider flow, evidence, settlement and every rejection."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from gpuproof.client import registration, signed_headers
from gpuproof.gateway import admin, service
from gpuproof.gateway.models import Challenge, Job, LogEntry, RequestNonce
from gpuproof.kernels import merkle
from gpuproof.kernels.backend import Opening
from gpuproof.kernels.reference import CpuBackend
from gpuproof.kernels.spec import ChallengeParams
from gpuproof.verifier import evidence, notes, signatures, transcript
from sqlalchemy import func, select

from tests.support.clock import stopped_limiter
from tests.support.note_oracle import node_verify, spec_verify


class Agent:
    """A provider driving the API by hand, with the CPU backend."""

    def __init__(self, gw, name="provider one", model="cpu-reference", devices=1):
        self.gw, self.client = gw, gw.client
        self.key = signatures.new_private_key()
        self.audience = self.client.get("/v1/identity").json()["audience"]
        claims = [{"model": model, "vram_gib": 8}] * devices
        r = self.client.post("/v1/providers", **registration(self.key, name, claims, audience=self.audience))
        assert r.status_code == 201, r.text
        self.id = r.json()["id"]

    def post(self, path, payload, key=None, provider=None, **header_overrides):
        body = json.dumps(payload).encode()
        headers = signed_headers(key or self.key, provider or self.id, "POST", path, body, audience=self.audience)
        headers.update(header_overrides)
        return self.client.post(path, content=body, headers=headers)

    def next(self, device=0):
        return self.post(f"/v1/providers/{self.id}/challenges", {"device": device})

    def prove(self, challenge):
        params = ChallengeParams.from_json(challenge)
        return params, CpuBackend().run(params)

    def openings(self, params, roots, pairs):
        out = []
        for r, i in sorted({tuple(p) for p in pairs}):
            values, path = CpuBackend().open(params, r, i, roots)
            out.append(Opening(r, i, values, tuple(path)).to_json())
        return {"openings": out}

    def full_round(self):
        c = self.next().json()
        params, roots = self.prove(c)
        req = self.post(f"/v1/challenges/{c['challenge_id']}/commitment", {"roots": [r.hex() for r in roots]})
        assert req.status_code == 200, req.text
        verdict = self.post(f"/v1/challenges/{c['challenge_id']}/openings",
                            self.openings(params, roots, req.json()["pairs"]))
        assert verdict.status_code == 200, verdict.text
        return c, verdict.json()


def db_counts(gw):
    db = gw.app.state.gp.db
    with db.reader() as s:
        return (s.scalar(select(func.count()).select_from(Challenge)),
                s.scalar(select(func.count()).select_from(RequestNonce)),
                s.scalar(select(func.count()).select_from(LogEntry)),
                s.scalar(select(func.count()).where(Challenge.state == "judged")))


def assert_problem(r, status, fragment):
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == status and fragment in body["detail"], body


def test_full_provider_flow_and_evidence(gateway):
    agent = Agent(gateway)
    assert gateway.client.get(f"/v1/providers/{agent.id}").json()["devices"][0]["verified_class"] is None
    c, verdict = agent.full_round()
    assert c["spec"] == "gpuproof/2"  # new challenges are v2 (docs/protocol.md, "Versioning")
    assert verdict["outcome"] == "pass" and verdict["correctness"] == "pass"
    device = gateway.client.get(f"/v1/providers/{agent.id}").json()["devices"][0]
    assert device["claimed_profile"] == "cpu-reference" and device["verified_class"] == verdict["best_match"]
    assert verdict["cheat_pass_probability"] < 1e-6
    # trust and history
    trust = gateway.client.get(f"/v1/providers/{agent.id}/trust").json()
    assert trust["evidence"] == 1 and trust["last_verified_at"] and trust["reasons"]
    history = gateway.client.get(f"/v1/providers/{agent.id}/verdicts").json()
    assert history["items"][0]["challenge_id"] == c["challenge_id"]
    # the transcript re-checks offline to the same verdict
    doc = gateway.client.get(f"/v1/challenges/{c['challenge_id']}/transcript").json()
    _, diffs = transcript.recheck(doc)
    assert diffs == [] and doc["spec"] == "gpuproof/2"
    # the log holds the registration, the commitment, the opening request and the verdict; proofs verify
    # against the signed head
    head = gateway.client.get("/v1/log/head").json()
    assert head["size"] == 4
    # its checkpoint verifies with a signed-note verifier written from the spec (tests/support/note_oracle.py)
    public = bytes.fromhex(head["public_key"])
    assert spec_verify(head["checkpoint"], head["origin"], public) == (head["origin"], 4, bytes.fromhex(head["root"]))
    assert notes.parse_verifier_key(head["verifier_key"]) == (head["origin"], public)
    # the older signature, which earlier clients check, is still there
    legacy = signatures.tree_head_message(head["size"], bytes.fromhex(head["root"]), head["timestamp"])
    signatures.verify(public, legacy, bytes.fromhex(head["signature"]))
    entries = gateway.client.get("/v1/log/entries", params={"start": 0}).json()["entries"]
    assert [e["kind"] for e in entries] == ["registration", "commitment", "opening-request", "verdict"]
    for e in entries:
        proof = gateway.client.get("/v1/log/inclusion", params={"index": e["index"], "size": 4}).json()
        merkle.verify_inclusion(e["index"], 4, merkle.leaf_hash(e["entry"].encode()),
                                [bytes.fromhex(h) for h in proof["proof"]], bytes.fromhex(head["root"]))
    cons = gateway.client.get("/v1/log/consistency", params={"old": 1, "new": 4}).json()
    merkle.verify_consistency(1, 4, merkle.leaf_hash(entries[0]["entry"].encode()), bytes.fromhex(head["root"]),
                              [bytes.fromhex(h) for h in cons["proof"]])
    mine = gateway.client.get(f"/v1/log/challenges/{c['challenge_id']}").json()["entries"]
    assert mine == entries[1:]
    assert evidence.challenge_differences(doc, [(e["index"], e["entry"]) for e in mine]) == []


def test_nothing_due_is_204_with_retry_after_and_an_open_challenge_is_resumed(gateway):
    agent = Agent(gateway)
    first = agent.next()
    assert first.status_code == 201
    again = agent.next()  # e.g. after an agent restart: the same open challenge comes back
    assert again.status_code == 200 and again.json()["challenge_id"] == first.json()["challenge_id"]
    params, roots = agent.prove(first.json())
    cid = first.json()["challenge_id"]
    req = agent.post(f"/v1/challenges/{cid}/commitment", {"roots": [r.hex() for r in roots]}).json()
    agent.post(f"/v1/challenges/{cid}/openings", agent.openings(params, roots, req["pairs"]))
    nothing = agent.next()
    assert nothing.status_code == 204 and int(nothing.headers["Retry-After"]) >= 1
    # the mean gap between rounds (policy); never when the next round comes: rounds are unannounced
    assert float(nothing.headers["X-Gpuproof-Challenge-Mean-Interval"]) == 3600
    assert not any("next-challenge" in h.lower() for h in nothing.headers)


def test_retries_return_the_same_response_and_count_once(gateway):
    agent = Agent(gateway)
    c = agent.next().json()
    params, roots = agent.prove(c)
    body = {"roots": [r.hex() for r in roots]}
    first = agent.post(f"/v1/challenges/{c['challenge_id']}/commitment", body)
    second = agent.post(f"/v1/challenges/{c['challenge_id']}/commitment", body)
    assert first.json() == second.json()
    openings = agent.openings(params, roots, first.json()["pairs"])
    v1 = agent.post(f"/v1/challenges/{c['challenge_id']}/openings", openings)
    before = db_counts(gateway)
    v2 = agent.post(f"/v1/challenges/{c['challenge_id']}/openings", openings)
    assert v1.json() == v2.json()
    assert db_counts(gateway) == before  # no new verdict, log entry or nonce
    assert gateway.client.get(f"/v1/providers/{agent.id}/trust").json()["evidence"] == 1


def test_replayed_request_is_rejected_and_changes_nothing(gateway):
    agent = Agent(gateway)
    path = f"/v1/providers/{agent.id}/challenges"
    body = json.dumps({"device": 0}).encode()
    headers = signed_headers(agent.key, agent.id, "POST", path, body, audience=gateway.audience)
    assert gateway.client.post(path, content=body, headers=headers).status_code == 201
    before = db_counts(gateway)
    assert_problem(gateway.client.post(path, content=body, headers=headers), 409, "already used")
    assert db_counts(gateway) == before


def test_forged_signature_other_key_and_altered_body(gateway):
    agent = Agent(gateway)
    other = signatures.new_private_key()
    before = db_counts(gateway)
    assert_problem(agent.post(f"/v1/providers/{agent.id}/challenges", {"device": 0}, key=other), 401,
                   "does not verify")
    path = f"/v1/providers/{agent.id}/challenges"
    headers = signed_headers(agent.key, agent.id, "POST", path, b'{"device": 0}', audience=gateway.audience)
    assert_problem(gateway.client.post(path, content=b'{"device": 1}', headers=headers), 401, "does not verify")
    assert_problem(agent.post(path, {"device": 0}, **{"X-Gpuproof-Signature": "zz"}), 401, "hex")
    assert_problem(agent.post(path, {"device": 0}, **{"X-Gpuproof-Timestamp": "1"}), 401, "window")
    assert db_counts(gateway) == before


def test_a_provider_cannot_touch_another_providers_challenge(gateway):
    alice, mallory = Agent(gateway, "alice"), Agent(gateway, "mallory")
    c = alice.next().json()
    before = db_counts(gateway)
    assert_problem(mallory.post(f"/v1/challenges/{c['challenge_id']}/commitment", {"roots": ["00" * 32] * 3}),
                   403, "another provider")
    assert_problem(mallory.post(f"/v1/providers/{alice.id}/challenges", {"device": 0}), 403, "its own")
    assert db_counts(gateway) == before


def test_late_commitment_is_refused_then_judged_a_timeout(gateway):
    agent = Agent(gateway)
    c = agent.next().json()
    db = gateway.app.state.gp.db
    with db.writer() as s:
        row = s.get(Challenge, c["challenge_id"])
        row.issued_at -= row.deadline_s + service.EXPIRY_GRACE_S + 5  # the deadline and its grace passed
        s.commit()
    before = db_counts(gateway)
    late = agent.post(f"/v1/challenges/{c['challenge_id']}/commitment", {"roots": ["00" * 32] * 3})
    assert_problem(late, 409, "deadline")
    assert db_counts(gateway) == before
    agent.next()  # the next poll records the timeout
    history = gateway.client.get(f"/v1/providers/{agent.id}/verdicts").json()["items"]
    assert history[0]["verdict"]["timing"] == "timeout" and history[0]["verdict"]["correctness"] == "unchecked"
    # what it answers afterwards says why, not "other roots"
    assert_problem(agent.post(f"/v1/challenges/{c['challenge_id']}/commitment", {"roots": ["00" * 32] * 3}),
                   409, "judged a timeout (no commitment before its deadline)")
    opening = {"round": 0, "row": 0, "values": [0] * c["n"], "path": []}
    assert_problem(agent.post(f"/v1/challenges/{c['challenge_id']}/openings", {"openings": [opening]}),
                   409, "judged a timeout")


def test_cheating_prover_fails_with_the_row_and_it_costs_trust(gateway):
    agent = Agent(gateway)
    c = agent.next().json()
    params, roots = agent.prove(c)
    req = agent.post(f"/v1/challenges/{c['challenge_id']}/commitment", {"roots": [r.hex() for r in roots]}).json()
    openings = agent.openings(params, roots, req["pairs"])
    openings["openings"][0]["values"][0] += 1
    verdict = agent.post(f"/v1/challenges/{c['challenge_id']}/openings", openings).json()
    assert verdict["outcome"] == "fail" and verdict["failure"]["reason"] == "bad-path"
    trust = gateway.client.get(f"/v1/providers/{agent.id}/trust").json()
    assert trust["score"] < 0.1 and "failed the correctness check" in trust["reasons"][0]


@pytest.mark.parametrize("payload, fragment", [
    ({"roots": ["zz" * 32] * 3}, "roots.0"), ({"roots": ["00" * 31] * 3}, "roots.0"),
    ({"roots": ["00" * 32] * 2}, "has 2 roots, want 3"), ({"roots": []}, "roots"), ({"nope": 1}, "roots"),
])
def test_bad_commitments_are_422_and_change_nothing(gateway, payload, fragment):
    agent = Agent(gateway)
    c = agent.next().json()
    before = db_counts(gateway)
    assert_problem(agent.post(f"/v1/challenges/{c['challenge_id']}/commitment", payload), 422, fragment)
    assert db_counts(gateway) == before


def test_unknown_ids_and_oversized_bodies(gateway):
    agent = Agent(gateway)
    assert_problem(agent.post("/v1/challenges/" + "0" * 32 + "/commitment", {"roots": ["00" * 32]}), 404,
                   "no challenge")
    assert_problem(gateway.client.get("/v1/challenges/" + "1" * 32 + "/transcript"), 404, "no challenge")
    assert_problem(gateway.client.get("/v1/providers/" + "2" * 32 + "/trust"), 404, "no provider")
    big = b'{"roots": ["' + b"0" * (gateway.settings.max_body_bytes + 10) + b'"]}'
    path = f"/v1/challenges/{'0' * 32}/commitment"
    r = gateway.client.post(path, content=big, headers=signed_headers(agent.key, agent.id, "POST", path, big,
                                                                                  audience=gateway.audience))
    assert_problem(r, 413, "limited")
    assert_problem(gateway.client.get("/v1/log/inclusion", params={"index": 5, "size": 1}), 422, "index")



def test_a_streamed_body_over_the_limit_is_counted_as_413_not_500(gateway):
    """Issue 18: a body without Content-Length that grows past the limit was answered 413 but counted as 500
    in gpuproof_request_seconds (the size check interrupts the app below the timing middleware)."""
    agent = Agent(gateway)
    path = f"/v1/challenges/{'0' * 32}/commitment"
    big = b'{"roots": ["' + b"0" * (gateway.settings.max_body_bytes + 10) + b'"]}'

    def chunks():  # a generator: httpx sends it chunked, with no Content-Length to refuse it early
        for i in range(0, len(big), 65536):
            yield big[i:i + 65536]

    r = gateway.client.post(path, content=chunks(), headers=signed_headers(agent.key, agent.id, "POST", path, big,
                                                                                  audience=gateway.audience))
    assert_problem(r, 413, "limited")
    lines = [line for line in gateway.client.get("/metrics").text.splitlines()
             if line.startswith("gpuproof_request_seconds_count") and "/commitment" in line]
    assert any('status="413"' in line for line in lines), lines
    assert not any('status="500"' in line for line in lines), lines

def test_registration_checks_possession_and_duplicates(gateway):
    key = signatures.new_private_key()
    body = registration(key, "someone", [{"model": "NVIDIA H100 80GB HBM3", "vram_gib": 80}], audience=gateway.audience)
    forged = dict(body, content=body["content"].replace(b"someone", b"someone else"))
    assert_problem(gateway.client.post("/v1/providers", **forged), 401, "does not verify")
    r = gateway.client.post("/v1/providers", **body)
    assert r.status_code == 201 and r.json()["devices"][0]["claimed_profile"] == "h100-sxm"
    assert_problem(gateway.client.post("/v1/providers", **body), 409, "already registered")
    bad_key = dict(body, content=json.dumps(dict(json.loads(body["content"]), public_key="zz")).encode())
    assert_problem(gateway.client.post("/v1/providers", **bad_key), 422, "public_key")
    listed = gateway.client.get("/v1/providers", params={"model": "H100"}).json()
    assert listed["total"] == 0  # a claim alone never lists a provider by model: only verified classes do
    assert gateway.client.get("/v1/providers", params={"min_lower_bound": 0.5}).json()["total"] == 0


def test_a_registration_is_updated_by_its_keys_owner_and_no_one_else(gateway):
    owner, other = Agent(gateway, "old name"), Agent(gateway, "someone else")
    owner.full_round()  # device 0 now has evidence
    path = f"/v1/providers/{owner.id}"

    def put(payload, key=owner.key, provider=owner.id):
        body = json.dumps(payload).encode()
        return gateway.client.put(path, content=body, headers=signed_headers(key, provider, "PUT", path, body,
                                                                                 audience=gateway.audience))

    new = {"name": "new name", "devices": [{"model": "NVIDIA H100 80GB HBM3", "vram_gib": 80},
                                           {"model": "cpu-reference", "vram_gib": 8}]}
    assert_problem(put({"name": "x", "devices": [{"model": "cpu-reference", "count": 2, "vram_gib": 8}]}), 422,
                   "count")  # one device is one card
    r = put(new)
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "new name" and r.json()["trust"]["evidence"] == 1  # the history stays
    assert [(d["claimed_profile"], d["count"]) for d in r.json()["devices"]] == [("h100-sxm", 1), ("cpu-reference", 1)]
    assert gateway.client.get(path).json()["devices"] == r.json()["devices"]
    # new claims are checked at once, in one round: every device at the same instant
    first, second = owner.next(0), owner.next(1)
    assert first.status_code == 201 and second.status_code == 200, (first.text, second.text)
    assert first.json()["issued_at"] == second.json()["issued_at"]
    kinds = [e["kind"] for e in gateway.client.get("/v1/log/entries", params={"start": 0}).json()["entries"]]
    assert kinds.count("registration-update") == 1
    # nobody else: another provider's signed request, a stranger's signature, a replay of the owner's request
    assert_problem(put(new, other.key, other.id), 403, "only update its own registration")
    assert_problem(put(new, signatures.new_private_key()), 401, "does not verify")
    body = json.dumps(new).encode()
    headers = signed_headers(owner.key, owner.id, "PUT", path, body, audience=gateway.audience)
    assert gateway.client.put(path, content=body, headers=headers).status_code == 200
    assert_problem(gateway.client.put(path, content=body, headers=headers), 409, "already used")
    # bad input is problem+json and changes nothing
    before = db_counts(gateway)
    assert_problem(put({"name": "", "devices": new["devices"]}), 422, "name")
    assert_problem(put({"name": "x", "devices": []}), 422, "devices")
    assert_problem(put(dict(new, public_key="00" * 32)), 422, "public_key")
    assert_problem(put({"name": "x", "devices": new["devices"][:1]}), 409, "device 1 (cpu-reference) has challenges")
    assert db_counts(gateway) == before and gateway.client.get(path).json()["name"] == "new name"
    # a position without evidence can go
    assert len(put({"name": "x", "devices": new["devices"] + new["devices"][:1]}).json()["devices"]) == 3
    assert len(put(new).json()["devices"]) == 2


def test_a_create_job_resent_after_its_answer_was_lost_makes_no_second_job(gateway):
    """A marketplace whose create_job answer was lost (a replica killed under it) resends the create; with
    the same Idempotency-Key it gets the job the first one made, not a second job billed to the renter. The
    key is per API key: another key's same Idempotency-Key is its own job; the same key with another body
    is refused."""
    agent = Agent(gateway)
    db = gateway.app.state.gp.db
    market, other = admin.create_api_key(db, "market", ["jobs"]), admin.create_api_key(db, "other", ["jobs"])
    job = {"renter_ref": "renter-1", "provider_id": agent.id, "price_ref": "usd:12.50"}

    def create(token: str, body: dict, idem: str | None = "create-1"):  # noqa: ANN202
        headers = {"Authorization": f"Bearer {token}"} | ({"Idempotency-Key": idem} if idem else {})
        return gateway.client.post("/v1/jobs", json=body, headers=headers)

    first, again = create(market, job), create(market, job)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert create(other, job).json()["id"] != first.json()["id"]
    assert_problem(create(market, dict(job, price_ref="usd:1")), 422, "Idempotency-Key")
    assert create(market, job, idem=None).json()["id"] != first.json()["id"]  # without a key: a new job each time
    with db.reader() as reader:
        assert reader.scalar(select(func.count()).select_from(Job)) == 3


def test_jobs_and_settlement_with_scoped_keys(gateway):
    agent = Agent(gateway)
    db = gateway.app.state.gp.db
    jobs_key = admin.create_api_key(db, "market", ["jobs"])
    settle_key = admin.create_api_key(db, "market-settle", ["jobs", "settle"], tenant="market")  # same marketplace
    job = {"renter_ref": "renter-1", "provider_id": agent.id, "price_ref": "usd:12.50"}
    assert_problem(gateway.client.post("/v1/jobs", json=job), 401, "Bearer")
    assert_problem(gateway.client.post("/v1/jobs", json=job, headers={"Authorization": "Bearer gpk_x_y"}), 401,
                   "not known")
    created = gateway.client.post("/v1/jobs", json=job, headers={"Authorization": f"Bearer {jobs_key}"})
    assert created.status_code == 201
    jid = created.json()["id"]
    url = f"/v1/jobs/{jid}/settlement"
    assert_problem(gateway.client.post(url, headers={"Authorization": f"Bearer {jobs_key}"}), 403, "settle")
    hold = gateway.client.post(url, headers={"Authorization": f"Bearer {settle_key}"}).json()
    assert hold["decision"] == "hold" and not hold["final"] and hold["reasons"]
    # the provider cheats during the job: refund, final, and stable
    c = agent.next().json()
    params, roots = agent.prove(c)
    req = agent.post(f"/v1/challenges/{c['challenge_id']}/commitment", {"roots": [r.hex() for r in roots]}).json()
    bad = agent.openings(params, roots, req["pairs"])
    bad["openings"][0]["path"][0] = "00" * 32
    agent.post(f"/v1/challenges/{c['challenge_id']}/openings", bad)
    refund = gateway.client.post(url, headers={"Authorization": f"Bearer {settle_key}"}).json()
    assert refund["decision"] == "refund" and refund["final"]
    again = gateway.client.post(url, headers={"Authorization": f"Bearer {settle_key}"}).json()
    assert again == refund
    kinds = [e["kind"] for e in gateway.client.get("/v1/log/entries").json()["entries"]]
    assert kinds.count("settlement") == 2


def test_a_challenge_left_unanswered_during_a_job_is_judged_at_settlement(gateway):
    """A provider that takes a challenge it cannot pass in time and goes silent (never polls again) must
    not keep its score: settlement holds while the challenge is open, and once the deadline has passed it
    records the timeout itself (before, only the provider's next poll did)."""
    agent = Agent(gateway)
    key = admin.create_api_key(gateway.app.state.gp.db, "market", ["jobs", "settle"])
    auth = {"Authorization": f"Bearer {key}"}
    job = gateway.client.post("/v1/jobs", json={"renter_ref": "r", "provider_id": agent.id, "price_ref": "p"},
                              headers=auth).json()
    url = f"/v1/jobs/{job['id']}/settlement"
    c = agent.next().json()  # issued during the job; never answered
    held = gateway.client.post(url, headers=auth).json()
    assert held["decision"] == "hold"
    assert any(r.startswith(f"challenge {c['challenge_id'][:12]} is in progress") for r in held["reasons"]), held
    with gateway.app.state.gp.db.writer() as s:
        row = s.get(Challenge, c["challenge_id"])
        row.issued_at -= row.deadline_s + service.EXPIRY_GRACE_S + 5  # the deadline and its grace passed
        s.commit()
    after = gateway.client.post(url, headers=auth).json()
    assert not any("in progress" in r for r in after["reasons"]), after
    verdicts = gateway.client.get(f"/v1/providers/{agent.id}/verdicts").json()["items"]
    assert [v["verdict"]["timing"] for v in verdicts] == ["timeout"]
    assert gateway.client.get(f"/v1/providers/{agent.id}/trust").json()["evidence"] == 1
    logged = [e for e in gateway.client.get("/v1/log/entries").json()["entries"] if e["kind"] == "verdict"]
    assert len(logged) == 1 and json.loads(logged[0]["entry"])["challenge_id"] == c["challenge_id"]


def test_health_readiness_metrics_and_openapi(gateway):
    agent = Agent(gateway)
    agent.full_round()
    assert gateway.client.get("/healthz").json() == {"status": "ok"}
    assert gateway.client.get("/readyz").json()["status"] == "ready"
    text = gateway.client.get("/metrics").text
    assert "gpuproof_challenges_issued_total" in text and "gpuproof_verdicts_total" in text
    assert agent.id not in text
    spec = gateway.client.get("/openapi.json").json()
    ops = {op["operationId"] for path in spec["paths"].values() for op in path.values()}
    assert {"register_provider", "next_challenge", "post_commitment", "post_openings", "get_trust",
            "settle_job", "get_tree_head", "get_consistency_proof"} <= ops


@pytest.mark.parametrize("page, kinds", [("/docs", {".js", ".css"}), ("/redoc", {".js"})])
def test_api_docs_work_offline_with_every_asset_served_by_the_gateway(gateway, page, kinds):
    html = gateway.client.get(page)
    assert html.status_code == 200 and "text/html" in html.headers["content-type"]
    assert "/openapi.json" in html.text and "://" not in html.text.replace("http://www.w3.org", "")  # no CDN
    assets = re.findall(r'(?:src|href)="([^"]+)"', html.text)
    assert {Path(a).suffix for a in assets} >= kinds
    for asset in assets:
        r = gateway.client.get(asset)
        assert r.status_code == 200 and len(r.content) > 1000, asset
        if asset.endswith(".js"):
            assert "javascript" in r.headers["content-type"]
        if asset.endswith(".css"):
            assert r.headers["content-type"].startswith("text/css")


def test_round_trip_probes_are_timed_by_the_gateway_and_lower_the_measured_time(gateway):
    agent = Agent(gateway)
    poll = agent.next()
    probe = poll.headers["X-Gpuproof-Rtt-Probe"]
    echo = agent.post(f"/v1/providers/{agent.id}/rtt", {"probe": probe})
    assert echo.status_code == 200 and 0 <= echo.json()["rtt_s"] < 5
    assert_problem(agent.post(f"/v1/providers/{agent.id}/rtt", {"probe": probe}), 409, "echoed before")
    other = Agent(gateway, "other")
    assert_problem(other.post(f"/v1/providers/{other.id}/rtt", {"probe": agent.next().headers["X-Gpuproof-Rtt-Probe"]}),
                   404, "no probe")
    c = poll.json()
    params, roots = agent.prove(c)
    agent.post(f"/v1/challenges/{c['challenge_id']}/commitment", {"roots": [r.hex() for r in roots]})
    with gateway.app.state.gp.db.reader() as s:
        row = s.get(Challenge, c["challenge_id"])
        assert row.rtt_s == pytest.approx(min(echo.json()["rtt_s"], 0.2))
        assert row.measured_s == pytest.approx(row.received_at - row.issued_at - row.rtt_s)


def test_a_first_rounds_probe_echoed_after_its_commitment_still_gives_the_allowance(gateway):
    """A new provider's only probe is its first round's own, echoed beside the proving; a commitment handled
    before the echo was recorded got allowance 0 (CI, tests/reliability/test_netfaults.py at 300 ms RTT),
    charging the honest provider a whole round trip. The allowance is taken again at judging, from the
    probes sent before the commitment came."""
    agent = Agent(gateway)
    poll = agent.next()
    c, probe = poll.json(), poll.headers["X-Gpuproof-Rtt-Probe"]
    params, roots = agent.prove(c)
    request = agent.post(f"/v1/challenges/{c['challenge_id']}/commitment", {"roots": [r.hex() for r in roots]})
    assert request.status_code == 200, request.text
    with gateway.app.state.gp.db.reader() as s:
        assert s.get(Challenge, c["challenge_id"]).rtt_s == 0.0  # nothing echoed yet
    time.sleep(0.05)
    echo = agent.post(f"/v1/providers/{agent.id}/rtt", {"probe": probe})  # late: after the commitment
    assert echo.status_code == 200, echo.text
    late_probe = agent.next().headers.get("X-Gpuproof-Rtt-Probe")  # sent after the commitment: never counts
    if late_probe:
        assert agent.post(f"/v1/providers/{agent.id}/rtt", {"probe": late_probe}).status_code == 200
    verdict = agent.post(f"/v1/challenges/{c['challenge_id']}/openings",
                         agent.openings(params, roots, request.json()["pairs"]))
    assert verdict.status_code == 200 and verdict.json()["outcome"] == "pass", verdict.text
    rtt = echo.json()["rtt_s"]
    assert rtt >= 0.05
    doc = gateway.client.get(f"/v1/challenges/{c['challenge_id']}/transcript").json()
    assert doc["commitment"]["rtt_s"] == pytest.approx(min(rtt, 0.2))
    with gateway.app.state.gp.db.reader() as s:
        row = s.get(Challenge, c["challenge_id"])
        assert row.rtt_s == pytest.approx(min(rtt, 0.2))
        assert row.measured_s == pytest.approx(max(0.0, row.received_at - row.issued_at - row.rtt_s))
        assert verdict.json()["measured_s"] == pytest.approx(row.measured_s)


def test_rate_limits_answer_429_with_retry_after(database_url, tmp_path):
    from fastapi.testclient import TestClient
    from gpuproof.gateway.app import create_app
    from gpuproof.gateway.settings import Settings

    settings = Settings(data_dir=tmp_path / "d", database_url=database_url, ip_rate_per_s=5)
    app = create_app(settings)
    with TestClient(app) as client:
        clock = stopped_limiter(app)
        codes = [client.get("/v1/providers").status_code for _ in range(30)]
        assert codes == [200] * 10 + [429] * 20  # a burst of 2 s x 5/s while time stands still
        r = client.get("/v1/providers")
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
        assert r.headers["content-type"].startswith("application/problem+json")
        clock.advance(1.0)  # five tokens back
        assert [client.get("/v1/providers").status_code for _ in range(6)] == [200] * 5 + [429]


def test_signing_key_is_made_once_with_mode_0600(gateway):
    path = gateway.settings.key_path()
    assert path.exists() and (path.stat().st_mode & 0o777) == 0o600
    from gpuproof.gateway.app import load_signing_key

    assert signatures.public_key_bytes(load_signing_key(path)).hex() == \
        gateway.client.get("/v1/log/head").json()["public_key"]


def test_readyz_fails_until_migrations_are_applied(tmp_path):
    from fastapi.testclient import TestClient
    from gpuproof.gateway.app import create_app
    from gpuproof.gateway.settings import Settings

    settings = Settings(data_dir=tmp_path / "d")
    with TestClient(create_app(settings, run_migrations=False)) as client:
        r = client.get("/readyz")
        assert r.status_code == 503 and "migration" in r.json()["detail"]
        assert client.get("/healthz").status_code == 200


def test_commitment_stored_but_not_drawn_before_a_crash_is_resumed_by_the_retry(gateway):
    """Regression (crash-safety suite): a gateway killed between storing the roots and drawing the rows
    answered the agent's retry with 409 'other roots'."""
    agent = Agent(gateway)
    c = agent.next().json()
    params, roots = agent.prove(c)
    body = {"roots": [r.hex() for r in roots]}
    first = agent.post(f"/v1/challenges/{c['challenge_id']}/commitment", body)
    with gateway.app.state.gp.db.writer() as s:  # as if the gateway died before the draw was stored
        row = s.get(Challenge, c["challenge_id"])
        row.pairs, row.x = None, None
        s.commit()
    retry = agent.post(f"/v1/challenges/{c['challenge_id']}/commitment", body)
    assert retry.status_code == 200 and len(retry.json()["pairs"]) == 32
    verdict = agent.post(f"/v1/challenges/{c['challenge_id']}/openings",
                         agent.openings(params, roots, retry.json()["pairs"]))
    assert verdict.json()["outcome"] == "pass" and first.status_code == 200


@pytest.mark.parametrize("query", ["/v1/providers?offset=9223372036854775808",
                                   "/v1/log/entries?start=99999999999999999999",
                                   "/v1/log/inclusion?index=0&size=18446744073709551616",
                                   f"/v1/providers/{'0' * 32}/verdicts?offset=9223372036854775808"])
def test_huge_offsets_and_indices_are_422_not_a_database_overflow(gateway, query):
    assert_problem(gateway.client.get(query), 422, "less than or equal")


def test_a_gateway_set_to_gpuproof_1_issues_and_judges_v1_challenges(database_url, tmp_path):
    """GPUPROOF_CHALLENGE_SPEC=gpuproof/1 (while agents that only know v1 still answer): challenges name v1,
    a v1 answer passes and the transcript re-checks under v1."""
    from fastapi.testclient import TestClient
    from gpuproof.gateway.app import create_app
    from gpuproof.gateway.settings import Settings

    from tests.gateway.conftest import Gateway

    settings = Settings(data_dir=tmp_path / "data", database_url=database_url, verify_test_shape="16,256,64,3",
                        challenge_interval_s=3600, provider_rate_per_s=1000, ip_rate_per_s=10000,
                        maintenance_interval_s=0, challenge_spec="gpuproof/1")
    app = create_app(settings)
    with TestClient(app) as client:
        gw = Gateway(client, settings, app)
        c, verdict = Agent(gw).full_round()
        doc = client.get(f"/v1/challenges/{c['challenge_id']}/transcript").json()
    assert c["spec"] == "gpuproof/1" and verdict["outcome"] == "pass"
    assert doc["spec"] == "gpuproof/1" and transcript.recheck(doc)[1] == []


def test_the_checkpoint_endpoint_serves_a_signed_note_any_verifier_checks(gateway, tmp_path):
    """GET /v1/log/checkpoint: the C2SP checkpoint as text, signed under the log's origin; a verifier written
    from the spec accepts it and refuses it tampered; the origin is the operator's when configured."""
    Agent(gateway)
    r = gateway.client.get("/v1/log/checkpoint")
    assert r.status_code == 200 and r.headers["content-type"] == "text/plain; charset=utf-8"
    head = gateway.client.get("/v1/log/head").json()
    assert r.text == head["checkpoint"]  # Ed25519 is deterministic: one tree, one checkpoint
    public = bytes.fromhex(head["public_key"])
    origin = head["origin"]
    assert origin.startswith("gpuproof/log/") and r.text.startswith(f"{origin}\n1\n")
    assert spec_verify(r.text, origin, public) == (origin, 1, bytes.fromhex(head["root"]))
    from cryptography.exceptions import InvalidSignature

    with pytest.raises(InvalidSignature):
        spec_verify(r.text.replace(f"{origin}\n1\n", f"{origin}\n2\n", 1), origin, public)
    with pytest.raises(notes.NoteError, match="does not verify"):
        notes.Checkpoint.open(r.text.replace(f"{origin}\n1\n", f"{origin}\n2\n", 1), public)
    # and in another language: a JavaScript verifier on Node's crypto, written from the specs
    # (tests/support/checkpoint_verify.mjs; it also verifies a sum.golang.org checkpoint, tests/verifier/test_notes.py)
    node = node_verify(head["verifier_key"], r.text)
    if node is not None:
        assert node.returncode == 0, node.stderr
        assert json.loads(node.stdout) == {"origin": origin, "size": 1, "root_hex": head["root"]}
        tampered = node_verify(head["verifier_key"], r.text.replace(f"{origin}\n1\n", f"{origin}\n2\n", 1))
        assert tampered is not None and tampered.returncode == 1 and "does not verify" in tampered.stderr
    # an operator's origin
    from fastapi.testclient import TestClient
    from gpuproof.gateway.app import create_app

    settings = gateway.settings.model_copy(update={"log_origin": "gateway.example/log"})
    with TestClient(create_app(settings)) as other:
        text = other.get("/v1/log/checkpoint").text
    assert text.startswith("gateway.example/log\n1\n") and "\n\n\u2014 gateway.example/log " in text
    assert notes.Checkpoint.open(text, public, origin="gateway.example/log").size == 1
    from gpuproof.gateway.settings import Settings

    with pytest.raises(ValueError, match="must not contain"):
        Settings(log_origin="my log")
