"""Crash safety: SIGKILL the gateway 20 times in the middle of a burst of registrations, commitments,
openings and settlements, restart it each time, and lose or double nothing.

Checks: every verdict and final settlement a client received is on record, once; the log holds exactly
one verdict entry per judged challenge; after every restart the log's head extends (consistency proof)
the last head served before the crash; the clients' retries all complete. A challenge whose deadline
passed while the gateway was down is refused as late (409), as the product must; it is never a pass.
Every wait and client timeout is scaled to this machine (tests/support/calibrate.py).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from gpuproof.client import GatewayClient, GatewayError, GatewayUnreachable, TreeHead
from gpuproof.gateway import admin
from gpuproof.gateway.db import Database
from gpuproof.gateway.models import Challenge, Job, LogEntry
from gpuproof.kernels.backend import Opening
from gpuproof.kernels.reference import CpuBackend
from gpuproof.verifier import signatures
from gpuproof.verifier.wire import ChallengeOut
from sqlalchemy import create_engine, select

from tests.support.calibrate import scaled
from tests.support.server import Server

KILLS = 20


def patiently(fn: Callable[[], Any], stop: threading.Event, limit_s: float = 120) -> Any:
    """fn() retried through crashes: the gateway unreachable or answering 5xx. Same content each time.
    Gives up after `limit_s` on the reference machine, scaled to this one."""
    deadline = time.monotonic() + scaled(limit_s)
    while True:
        try:
            return fn()
        except GatewayUnreachable:
            pass
        except GatewayError as exc:
            if exc.status < 500:
                raise
        if time.monotonic() > deadline:
            raise TimeoutError("the gateway did not come back")
        time.sleep(0.1)


class Provider(threading.Thread):
    def __init__(self, base: str, stop: threading.Event, log: dict) -> None:
        super().__init__(daemon=True)
        self.client = GatewayClient(base, key=signatures.new_private_key(), timeout=scaled(10))
        self.stop, self.log, self.error = stop, log, None

    def register(self) -> None:
        try:
            patiently(lambda: self.client.register("crash", [{"model": "cpu-reference", "vram_gib": 1}]), self.stop)
        except GatewayError as exc:  # registered by an attempt whose answer was lost in a crash
            assert exc.status == 409, exc
        self.log["registered"].append(self.client.provider_id)

    def run(self) -> None:
        try:
            self.register()
            while not self.stop.is_set():
                c, _, _ = patiently(lambda: self.client.next_challenge(0), self.stop)
                if c is None:
                    continue
                try:
                    self.answer(c)
                except GatewayError as exc:
                    if not late(exc):
                        raise
                    self.log["late"].append(c.challenge_id)
        except Exception as exc:  # surfaced by the test
            self.error = exc

    def answer(self, c: ChallengeOut) -> None:
        params = c.params()
        roots = CpuBackend().run(params)
        req = patiently(lambda: self.client.commit(c.challenge_id, roots), self.stop)
        openings = []
        for r, i in sorted(set(req.pairs)):
            values, path = CpuBackend().open(params, r, i, roots)
            openings.append(Opening(r, i, values, tuple(path)).to_json())
        verdict = patiently(lambda: self.client.open(c.challenge_id, openings), self.stop)
        self.log["verdicts"][c.challenge_id] = str(verdict.outcome)


def late(exc: GatewayError) -> bool:
    """The gateway refused a commitment or openings because the challenge's deadline passed (while it was
    down, or restarting on a busy machine): the product's answer, judged a timeout, not a lost request."""
    return exc.status == 409 and (exc.title == "Deadline passed" or "judged a timeout" in exc.detail)


class Settler(threading.Thread):
    def __init__(self, base: str, token: str, providers: list[Provider], stop: threading.Event, log: dict) -> None:
        super().__init__(daemon=True)
        self.client = GatewayClient(base, api_key=token, timeout=scaled(10))
        self.providers, self.stop, self.log, self.error = providers, stop, log, None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                pid = random.choice(self.log["registered"]) if self.log["registered"] else None
                if pid is None:
                    time.sleep(0.05)
                    continue
                job = patiently(lambda: self.client.create_job("renter", pid, "usd:1"), self.stop)  # noqa: B023
                decision = patiently(lambda: self.client.settle(job.id), self.stop)  # noqa: B023
                self.log["settlements"][job.id] = decision
        except Exception as exc:
            self.error = exc


def run_crashes(database_url: str, tmp_path) -> None:  # noqa: ANN001
    server = Server(database_url, tmp_path / "gw", GPUPROOF_CHALLENGE_INTERVAL_S="0",
                    GPUPROOF_PROVIDER_RATE_PER_S="100000", GPUPROOF_IP_RATE_PER_S="100000").start()
    token = admin.create_api_key(Database(database_url), "crash", ["jobs", "settle"])
    stop = threading.Event()
    log: dict = {"registered": [], "verdicts": {}, "settlements": {}, "late": []}
    providers = [Provider(server.base, stop, log) for _ in range(3)]
    settler = Settler(server.base, token, providers, stop, log)
    for t in (*providers, settler):
        t.start()
    reader = GatewayClient(server.base, timeout=scaled(10))
    rng = random.Random(20261126)
    heads: list[TreeHead] = []
    try:
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.2, 1.2))
            heads.append(patiently(reader.tree_head, stop))
            server.kill()
            time.sleep(rng.uniform(0.0, 0.5))
            server.start()
            after = patiently(lambda: reader.check_extends(heads[-1]), stop)  # noqa: B023
            assert after.size >= heads[-1].size
        time.sleep(1.0)
    finally:
        stop.set()
        for t in (*providers, settler):
            t.join(timeout=scaled(120))
        server.stop()
    errors = [t.error for t in (*providers, settler) if t.error]
    assert not errors, errors
    assert len(log["verdicts"]) >= KILLS // 2, "too little work got through to mean anything"

    engine = create_engine(database_url)
    with engine.connect() as c:
        judged = dict(c.execute(select(Challenge.id, Challenge.outcome).where(Challenge.state == "judged")).all())
        entries = c.execute(select(LogEntry.idx, LogEntry.kind, LogEntry.body).order_by(LogEntry.idx)).all()
        jobs = {j.id: j for j in c.execute(select(Job)).all()}
    engine.dispose()
    # no accepted verdict lost, none changed
    for cid, outcome in log["verdicts"].items():
        assert judged.get(cid) == outcome, cid
    # a challenge refused as late is never a pass (judged a timeout, or not yet judged when the test ended)
    assert all(judged.get(cid, "fail") == "fail" for cid in log["late"]), log["late"]
    # the log: consecutive indices, exactly one verdict entry per judged challenge
    assert [e.idx for e in entries] == list(range(len(entries)))
    verdict_ids = [json.loads(e.body)["challenge_id"] for e in entries if e.kind == "verdict"]
    assert len(verdict_ids) == len(set(verdict_ids)) and set(verdict_ids) == set(judged)
    # settlements: every decision a client saw is on record; final ones never changed
    for jid, decision in log["settlements"].items():
        assert jid in jobs
        if decision.final:
            assert jobs[jid].decision == decision.decision and jobs[jid].final
    settled = [json.loads(e.body)["job_id"] for e in entries if e.kind == "settlement"]
    assert all(jobs[j].decision is not None for j in settled)
    registered = [json.loads(e.body)["provider_id"] for e in entries if e.kind == "registration"]
    assert len(registered) == len(set(registered)) and set(log["registered"]) <= set(registered)


def test_sigkill_20_times_mid_burst_loses_and_doubles_nothing(database_url, tmp_path):
    run_crashes(database_url, tmp_path)
