"""Pay only for proven hardware (issue 16): a job names its devices and the class paid for, and release needs
passes at or above that class on every named device during the job. Each test reproduces an attack from the
issue through the HTTP API, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest
from gpuproof.client import registration, signed_headers
from gpuproof.gateway import admin, service
from gpuproof.gateway.models import Challenge, Device, Job
from gpuproof.gateway.trust_cache import TrustCache
from gpuproof.kernels.reference import CpuBackend
from gpuproof.kernels.spec import ChallengeParams
from gpuproof.verifier import signatures
from sqlalchemy import update

from tests.gateway.test_http import (
    servers,  # noqa: F401 (fixture)
    signed_post,
)
from tests.support import honest


class Provider:
    """A provider driving the API by hand with the CPU backend; `devices` are the models it registers."""

    def __init__(self, gw, devices: list[str], name: str = "box"):
        self.gw, self.client = gw, gw.client
        self.key = signatures.new_private_key()
        self.audience = self.client.get("/v1/identity").json()["audience"]
        claims = [{"model": m, "vram_gib": 8} for m in devices]
        r = self.client.post("/v1/providers", **registration(self.key, name, claims, audience=self.audience))
        assert r.status_code == 201, r.text
        self.id = r.json()["id"]

    def post(self, path: str, payload: dict) -> httpx.Response:
        body = json.dumps(payload).encode()
        return self.client.post(path, content=body, headers=signed_headers(self.key, self.id, "POST", path, body,
                                                                                 audience=self.audience))

    def due_now(self) -> None:
        with self.gw.app.state.gp.db.writer() as s:
            s.execute(update(Device).where(Device.provider_id == self.id).values(next_due_at=0.0))
            s.commit()

    def challenge(self, device: int) -> dict:
        self.due_now()
        r = self.post(f"/v1/providers/{self.id}/challenges", {"device": device})
        assert r.status_code in (200, 201), r.text
        return r.json()

    def commit(self, c: dict, think_s: float = 0.0) -> tuple[ChallengeParams, list[bytes], list]:
        params = ChallengeParams.from_json(c)
        roots = CpuBackend().run(params)
        time.sleep(think_s)  # a slower card
        r = self.post(f"/v1/challenges/{c['challenge_id']}/commitment", {"roots": [x.hex() for x in roots]})
        assert r.status_code == 200, r.text
        return params, roots, r.json()["pairs"]

    def commit_full(self, c: dict, think_s: float = 0.0) -> tuple[ChallengeParams, list[bytes], dict]:
        params = ChallengeParams.from_json(c)
        roots = CpuBackend().run(params)
        time.sleep(think_s)  # a slower card
        r = self.post(f"/v1/challenges/{c['challenge_id']}/commitment", {"roots": [x.hex() for x in roots]})
        assert r.status_code == 200, r.text
        return params, roots, r.json()

    def answer(self, device: int, think_s: float = 0.0, c: dict | None = None) -> dict:
        c = c or self.challenge(device)
        params, roots, request = self.commit_full(c, think_s)
        body = {"openings": honest.openings(params, roots, request["pairs"])}
        prover = honest.memory_prover(c, params, roots)
        if prover is not None:  # spec v2's memory phase (a profiled card): walk, commit it, open the lanes
            wk, walk_root = honest.walk(prover, params, roots, request["walk_nonce"])
            r = self.post(f"/v1/challenges/{c['challenge_id']}/walk", {"walk_root": walk_root.hex()})
            assert r.status_code == 200, r.text
            body["lanes"] = honest.lanes(prover, wk, r.json()["lanes"])
        verdict = self.post(f"/v1/challenges/{c['challenge_id']}/openings", body)
        assert verdict.status_code == 200, verdict.text
        return verdict.json()

    def round(self, devices: list[int]) -> list[dict]:
        """A round made due now: every device is challenged at once; `devices` are picked up and answered."""
        self.due_now()
        challenges = [self.post(f"/v1/providers/{self.id}/challenges", {"device": d}).json() for d in devices]
        assert len({c["issued_at"] for c in challenges}) == 1, "one round, one instant"
        return [self.answer(d, c=c) for d, c in zip(devices, challenges, strict=True)]


@pytest.fixture
def market(gateway):
    key = admin.create_api_key(gateway.app.state.gp.db, "market", ["jobs", "settle"])
    auth = {"Authorization": f"Bearer {key}"}

    class Market:
        def job(self, provider: Provider, **binding) -> httpx.Response:
            return gateway.client.post("/v1/jobs", json={"renter_ref": "r", "provider_id": provider.id,
                                                         "price_ref": "p", **binding}, headers=auth)

        def settle(self, job_id: str) -> dict:
            r = gateway.client.post(f"/v1/jobs/{job_id}/settlement", headers=auth)
            assert r.status_code == 200, r.text
            return r.json()

    return Market()


def test_a_farmed_identity_is_not_paid_for_h100s_it_never_proved(gateway, market):
    """Reproduction: 4 "H100" devices and one cpu-reference device; only the cheap one answers (5 passes).
    Before: trusted, and its job settled release. Now: hold, naming every unproven device."""
    farmer = Provider(gateway, ["NVIDIA H100"] * 4 + ["cpu-reference"])
    h100_job = market.job(farmer, devices=[0, 1, 2, 3], paid_class="h100-sxm").json()
    any_job = market.job(farmer).json()
    assert any_job["devices"] == [0, 1, 2, 3, 4] and any_job["paid_class"] == "cpu-reference"
    for _ in range(5):  # every round challenges all five devices; only the cheap one answers
        assert [v["outcome"] for v in farmer.round([4])] == ["pass"]
    for job in (h100_job, any_job):
        decision = market.settle(job["id"])
        assert decision["decision"] == "hold", decision
        for d in range(4):
            assert any(r.startswith(f"device {d} has 0 of the 1 passes") for r in decision["reasons"]), decision
    # the marketplace query docs/api.md recommends lists providers by verified class, not by claim
    listed = gateway.client.get("/v1/providers", params={"model": "H100", "min_lower_bound": 0.6}).json()
    assert listed["total"] == 0 and listed["items"] == [], listed
    cpu = gateway.client.get("/v1/providers", params={"model": "cpu-reference"}).json()["items"]
    assert [p["id"] for p in cpu] == [farmer.id]


def test_a_job_whose_every_device_passed_at_the_paid_class_releases(gateway, market):
    honest = Provider(gateway, ["cpu-reference", "cpu-reference"])
    job = market.job(honest, paid_class="cpu-reference").json()
    for _ in range(4):
        assert [v["outcome"] for v in honest.round([0, 1])] == ["pass", "pass"]
    decision = market.settle(job["id"])  # every device proven; but a round weighs one pass: 4 are too few
    assert decision["decision"] == "hold" and not any(r.startswith("device") for r in decision["reasons"])
    assert any(r.startswith("trust lower bound") for r in decision["reasons"]), decision
    honest.round([0, 1])
    decision = market.settle(job["id"])
    assert decision["decision"] == "release", decision
    assert decision["reasons"][0].startswith("device 0: 5 passes at cpu-reference or above; "
                                             "device 1: 5 passes at cpu-reference or above"), decision


def test_a_device_that_misses_its_round_holds_the_payment(gateway, market):
    """Reproduction (one box as many): a provider answers one device of two and lets the other's challenge
    lie. Before, a device was challenged only when it asked; now the round challenged both, and the one not
    picked up within the start window is missed."""
    box = Provider(gateway, ["cpu-reference", "cpu-reference"])
    job = market.job(box).json()
    for _ in range(6):
        assert [v["outcome"] for v in box.round([0])] == ["pass"]
    with gateway.app.state.gp.db.writer() as s:  # the start window has passed for device 1's challenge
        s.execute(update(Challenge).where(Challenge.state == "issued").values(issued_at=Challenge.issued_at - 10))
        s.execute(update(Job).values(created_at=Job.created_at - 60))
        s.commit()
    decision = market.settle(job["id"])
    assert decision["decision"] == "hold", decision
    assert any(r.startswith("device 1: challenge") and "was missed" in r for r in decision["reasons"]), decision
    verdict = [v["verdict"] for v in gateway.client.get(f"/v1/providers/{box.id}/verdicts").json()["items"]
               if v["verdict"]["timing"] == "timeout"][0]
    assert verdict["failure"]["detail"] == "not picked up within the start window of 5 s", verdict


def test_passes_before_the_job_began_do_not_prove_its_hardware(gateway, market):
    early = Provider(gateway, ["cpu-reference"])
    for _ in range(6):
        early.round([0])
    job = market.job(early).json()
    decision = market.settle(job["id"])
    assert decision["decision"] == "hold"
    assert any(r.startswith("device 0 has 0 of the 1 passes") for r in decision["reasons"]), decision


def test_a_card_slower_than_its_claim_during_the_job_is_refunded(gateway, market):
    """A card slower than any honest H100 (here the CPU, taking longer than the slowest honest H100's limit)
    answers correctly for a claimed H100: refund, naming the device."""
    liar = Provider(gateway, ["NVIDIA H100"])
    job = market.job(liar).json()
    assert job["paid_class"] == "h100-sxm"
    verdict = liar.answer(0, think_s=0.6)
    assert verdict["correctness"] == "pass" and verdict["timing"] == "slower-than-claimed", verdict
    decision = market.settle(job["id"])
    assert decision["decision"] == "refund" and decision["final"], decision
    assert any(r.startswith("device 0: challenge") and "slower than any honest h100-sxm" in r
               for r in decision["reasons"]), decision


def test_the_paid_class_and_devices_are_validated(gateway, market):
    p = Provider(gateway, ["cpu-reference", "Some Unknown Accelerator 9000"])
    for binding, fragment in [({"paid_class": "h900"}, "paid_class: expected one of"),
                              ({"paid_class": "unprofiled"}, "paid_class: expected one of"),
                              ({"devices": [2]}, "no device at position 2"),
                              ({"devices": [0, 0]}, "named twice"),
                              ({"devices": []}, "devices"),
                              ({}, "unprofiled; name the class paid for")]:
        r = market.job(p, **binding)
        assert r.status_code == 422 and fragment in r.json()["detail"], (binding, r.text)
    assert market.job(p, devices=[0]).json()["paid_class"] == "cpu-reference"


def test_an_unprofiled_device_never_satisfies_a_paid_class(gateway, market):
    p = Provider(gateway, ["Some Unknown Accelerator 9000"])
    job = market.job(p, paid_class="cpu-reference").json()
    for _ in range(6):
        [verdict] = p.round([0])
        assert verdict["outcome"] == "pass" and verdict["timing"] == "unprofiled", verdict
    decision = market.settle(job["id"])
    assert decision["decision"] == "hold"
    assert any("its passes prove only unprofiled" in r for r in decision["reasons"]), decision


def test_withholding_openings_after_seeing_the_request_weighs_as_a_failure(gateway, market):
    """Reproduction: commit garbage, read which rows will be opened, go silent. Before: a timeout (weight 1)
    and the job could still release. Now: "withheld", a correctness failure (weight 20), and a refund."""
    p = Provider(gateway, ["cpu-reference"])
    job = market.job(p).json()
    c = p.challenge(0)
    r = p.post(f"/v1/challenges/{c['challenge_id']}/commitment", {"roots": ["ab" * 32] * c["rounds"]})
    assert r.status_code == 200 and r.json()["pairs"]
    with gateway.app.state.gp.db.writer() as s:
        row = s.get(Challenge, c["challenge_id"])
        row.issued_at -= row.deadline_s + service.EXPIRY_GRACE_S + 5
        s.commit()
    decision = market.settle(job["id"])
    assert decision["decision"] == "refund", decision
    assert any("withheld its openings" in r for r in decision["reasons"]), decision
    verdict = gateway.client.get(f"/v1/providers/{p.id}/verdicts").json()["items"][0]["verdict"]
    assert verdict["correctness"] == "fail" and verdict["failure"]["reason"] == "withheld", verdict
    trust = gateway.client.get(f"/v1/providers/{p.id}/trust").json()
    assert trust["status"] == "suspect" and any("counts 20.00 against" in r for r in trust["reasons"]), trust


def test_a_challenge_never_committed_is_still_only_a_timeout(gateway, market):
    p = Provider(gateway, ["cpu-reference"])
    c = p.challenge(0)
    with gateway.app.state.gp.db.writer() as s:
        row = s.get(Challenge, c["challenge_id"])
        row.issued_at -= row.deadline_s + service.EXPIRY_GRACE_S + 5
        s.commit()
    market.settle(market.job(p).json()["id"])
    verdict = gateway.client.get(f"/v1/providers/{p.id}/verdicts").json()["items"][0]["verdict"]
    assert verdict["correctness"] == "unchecked" and verdict["timing"] == "timeout", verdict


def test_simultaneous_polls_for_one_device_issue_one_challenge(servers, database_url):  # noqa: F811
    """Reproduction (PostgreSQL): eight simultaneous polls for one device issued 3, 1 and 2 challenges in three
    trials. Now exactly one, whoever asks, on either of two gateway processes."""
    from sqlalchemy import create_engine, func, select

    a, b = servers(), servers()
    key = signatures.new_private_key()
    clients = [httpx.Client(base_url=s.base, timeout=60) for s in (a, b)]
    engine = create_engine(database_url)
    try:
        pid = clients[0].post("/v1/providers", **registration(key, "race", [{"model": "cpu-reference", "vram_gib": 4}],
                                                              audience=a.audience)).json()["id"]
        for trial in range(3):
            with engine.begin() as conn:
                conn.execute(update(Device).values(next_due_at=0.0))
                conn.execute(update(Challenge).values(state="judged"))
            start: threading.Barrier = threading.Barrier(8)
            answers: list[httpx.Response] = []

            def poll(i: int, start: threading.Barrier = start, answers: list = answers) -> None:
                start.wait()
                answers.append(signed_post(clients[i % 2], key, pid, f"/v1/providers/{pid}/challenges",
                                           {"device": 0}))

            threads = [threading.Thread(target=poll, args=(i,)) for i in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=120)
            codes = [r.status_code for r in answers]
            assert codes.count(201) == 1 and set(codes) <= {200, 201}, [r.text for r in answers]  # one issued
            ids = {r.json()["challenge_id"] for r in answers if r.status_code in (200, 201)}
            with engine.connect() as conn:
                open_count = conn.execute(select(func.count()).select_from(Challenge)
                                          .where(Challenge.state == "issued")).scalar_one()
            assert len(ids) == 1 and open_count == 1, f"trial {trial}: {len(ids)} challenges issued, {open_count} open"
    finally:
        for client in clients:
            client.close()
        engine.dispose()


def test_the_dashboard_shows_each_devices_verified_class_and_last_scheduled_challenge(gateway):
    p = Provider(gateway, ["cpu-reference", "NVIDIA H100"])
    p.round([0])  # device 1's challenge of the round is still open
    page = gateway.client.get(f"/providers/{p.id}").text
    assert "Last scheduled challenge" in page
    rows = page.split("<h2>Devices</h2>", 1)[1].split("</table>", 1)[0].split("<tr>")[2:]
    assert "cpu-reference</td><td>cpu-reference</td>" in rows[0] and "UTC, pass" in rows[0], rows[0]
    assert "h100-sxm</td><td>-</td>" in rows[1] and "UTC, open" in rows[1], rows[1]



def test_the_model_filter_reads_stored_classes_not_every_recent_pass(gateway):
    """?model= read every recent pass of every provider that had one (O(all passes) for a cheap public
    read, and the verified ids written into the statement: ~3.5 MB at 100,000 providers). It now reads the
    devices' stored classes: every statement that touches the challenges table is bounded by the page's own
    provider ids (the page's items show their devices' classes), none reads the others' passes."""
    from sqlalchemy import event

    state = gateway.app.state.gp
    state.page_cache = TrustCache(0)
    passed = [Provider(gateway, ["cpu-reference"]) for _ in range(3)]
    for p in passed:
        assert [v["outcome"] for v in p.round([0])] == ["pass"]
    Provider(gateway, ["cpu-reference"])  # registered, never passed
    everyone = {p.id for p in passed}
    seen: list[tuple[str, object]] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        seen.append((statement, parameters))

    engine = state.db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        listed = gateway.client.get("/v1/providers", params={"model": "cpu-reference", "limit": 2})
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert listed.status_code == 200, listed.text
    page = {p["id"] for p in listed.json()["items"]}
    assert listed.json()["total"] == 3 and len(page) == 2 and page <= everyone
    touching = [(st, params) for st, params in seen if "challenges" in st]
    assert touching, seen  # the page's items: their devices' classes from their passes
    for statement, params in touching:
        bound = {v for v in (params.values() if isinstance(params, dict) else params or ()) if v in everyone}
        assert bound and bound <= page, statement
    assert gateway.client.get("/v1/providers", params={"model": "H100"}).json()["items"] == []


def test_a_class_leaves_the_model_filter_when_its_passes_leave_the_window_and_the_sweep_fills_new_columns(gateway):
    """The stored class holds until as many passes as it leads by have aged out (verified_until); a listing
    never shows a device past that, and the maintenance sweep works it out again. Devices whose class was
    never worked out (null, as after the upgrade that added the columns) are worked out by the sweep."""
    from gpuproof.gateway import maintenance

    state = gateway.app.state.gp
    state.page_cache = TrustCache(0)
    old, recent = Provider(gateway, ["cpu-reference"], "old"), Provider(gateway, ["cpu-reference"], "recent")
    for p in (old, recent):
        assert [v["outcome"] for v in p.round([0])] == ["pass"]

    def listed() -> set[str]:
        state.totals = type(state.totals)(0)  # counted afresh
        return {p["id"] for p in gateway.client.get("/v1/providers", params={"model": "cpu-reference"}).json()["items"]}

    assert listed() == {old.id, recent.id}
    with state.db.writer() as s:  # the old provider's evidence moves a window into the past, its class's bound too
        shift = service.VERIFIED_WINDOW_S + 1
        s.execute(update(Challenge).where(Challenge.provider_id == old.id)
                  .values(judged_at=Challenge.judged_at - shift))
        s.execute(update(Device).where(Device.provider_id == old.id)
                  .values(verified_until=Device.verified_until - shift))
        s.execute(update(Device).where(Device.provider_id == recent.id).values(verified_class=None,
                                                                               verified_until=None))
        s.commit()
    assert listed() == set()  # old: its class's bound has passed; recent: never worked out
    now = time.time()
    assert maintenance.sweep(state, now).verified_classes == 2
    assert listed() == {recent.id}
    with state.db.reader() as s:
        devices = {d.provider_id: d for d in s.query(Device).filter(Device.provider_id.in_([old.id, recent.id]))}
    assert devices[old.id].verified_class is None and devices[old.id].verified_until > now  # only a pass gives one
    assert devices[recent.id].verified_class == "cpu-reference"
    Provider(gateway, ["cpu-reference", "NVIDIA H100"], "new")  # registered: its devices' "none" is worked out
    assert maintenance.sweep(state, now).verified_classes == 0  # nothing due again (a flood of registrations
    # left null would keep the sweep, which takes those first, from devices whose class is due)
