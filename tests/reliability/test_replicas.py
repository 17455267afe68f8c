"""Three gateway replicas behind a round-robin balancer, as one service: one PostgreSQL, one Redis (shared
rate limits) and one S3 server (uploaded checkpoint states). Providers answer challenges honestly, a
marketplace creates and settles jobs, a training job uploads a checkpoint state that a validator replays,
and one replica is SIGKILLed in the middle of it all and started again.

The kill comes while the victim is reading a request the test holds open, and cuts it off (and any of the
workload's it was serving). Checks: the held request was cut off, not answered or refused; only challenges
received and not yet judged at the kill failed (missed their deadline or were judged slow), at most one per
provider; verdicts came after the restart and the restarted replica served requests; each job the
marketplace meant to create exists once (its create carries an Idempotency-Key, so a create resent after
its answer was lost gets the same job); every verdict and final settlement a client received is on record
once; the log has consecutive
indices, one verdict entry per judged challenge and one registration per provider; every signed head read
during the run (from whichever replica answered) is signed by the one gateway key and extends the head
read before it (consistency proofs from the API, checked with the client's verification); each drawn
segment's uploaded state is one object in the bucket (by content) until its replay is judged, then deleted,
and each replay's verdict is recorded once; and the registration budget per client address holds across
the three replicas (Redis), not three times over.

The balancer (`RoundRobin`) sends each request to the next replica and, like a load balancer's
`next upstream on connect error`, to the one after when a replica refuses the connection (killed). A request
cut off in flight is retried by the client, as the agent does, with a freshly signed request.
Needs PostgreSQL at 127.0.0.1:5432 and Redis at 127.0.0.1:6379; skips, saying which is missing, otherwise.
Waits and client timeouts are scaled to this machine (tests/support/calibrate.py).
"""

from __future__ import annotations

import collections
import json
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from gpuproof.agent.training import replay_job, run_reference_job
from gpuproof.client import GatewayClient, GatewayError, GatewayUnreachable, TreeHead, registration
from gpuproof.gateway import admin, migrate
from gpuproof.gateway.db import Database
from gpuproof.gateway.models import Challenge, Job, LogEntry, SegmentAudit
from gpuproof.kernels.backend import Opening
from gpuproof.kernels.reference import CpuBackend
from gpuproof.verifier import logproofs, signatures
from sqlalchemy import create_engine, select

from tests.conftest import _PG
from tests.gateway.test_training import POLICY
from tests.support.calibrate import scaled
from tests.support.server import Server

REDIS = "redis://127.0.0.1:6379/0"
REPLICAS = 3
REGISTRATION_BUDGET = 8  # per client address per hour, shared by the replicas through Redis


def redis_reason() -> str | None:
    try:
        import redis

        redis.Redis.from_url(REDIS, socket_connect_timeout=1, socket_timeout=1).ping()
        return None
    except Exception as exc:  # any failure means: no usable server here
        return f"Redis at 127.0.0.1:6379 is not usable ({type(exc).__name__}: {str(exc)[:80]})"


pytestmark = [pytest.mark.skipif(_PG is not None, reason=_PG or ""),
              pytest.mark.skipif(redis_reason() is not None, reason=redis_reason() or "")]


class RoundRobin(httpx.HTTPTransport):
    """A load balancer in the client: each request goes to the next replica's port; a refused connection
    (a replica down) goes on to the following one. Counts the requests each replica answered."""

    def __init__(self, ports: list[int]) -> None:
        super().__init__()
        self.ports, self.served = ports, collections.Counter()
        self.inflight, self.cut = collections.Counter(), collections.Counter()  # sent, answer not (yet) read
        self._next, self._lock = 0, threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            first = self._next
            self._next = (self._next + 1) % len(self.ports)
        error: Exception | None = None
        for i in range(len(self.ports)):
            port = self.ports[(first + i) % len(self.ports)]
            request.url = request.url.copy_with(port=port)
            with self._lock:
                self.inflight[port] += 1
            try:
                response = super().handle_request(request)
                response.read()  # the whole answer, so a kill mid-answer counts as cut off
            except httpx.ConnectError as exc:  # nothing was sent: safe to send elsewhere
                error = exc
                continue
            except httpx.TransportError:  # sent, and the answer lost (the replica died under it)
                with self._lock:
                    self.cut[port] += 1
                raise
            finally:
                with self._lock:
                    self.inflight[port] -= 1
            with self._lock:
                self.served[port] += 1
            return response
        assert error is not None
        raise error


def patiently(fn: Callable[[], Any], limit_s: float = 60) -> Any:
    """fn() again (a new signed request each time) while no replica answers or one answers 5xx/429."""
    deadline = time.monotonic() + scaled(limit_s)
    while True:
        try:
            return fn()
        except GatewayUnreachable:
            pass
        except GatewayError as exc:
            if exc.status < 500 and exc.status != 429:
                raise
        if time.monotonic() > deadline:
            raise TimeoutError("no replica answered")
        time.sleep(0.1)


class Worker(threading.Thread):
    def __init__(self, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.stop, self.error = stop, None

    def run(self) -> None:
        try:
            self.work()
        except Exception as exc:  # surfaced by the test
            self.error = exc

    def work(self) -> None:
        raise NotImplementedError


class Provider(Worker):
    """Registers, then answers every challenge honestly until stopped."""

    def __init__(self, client: GatewayClient, stop: threading.Event, log: dict) -> None:
        super().__init__(stop)
        self.client, self.log = client, log

    def work(self) -> None:
        try:
            patiently(lambda: self.client.register("replica", [{"model": "cpu-reference", "vram_gib": 1}]))
        except GatewayError as exc:  # registered by an attempt whose answer was lost with a killed replica
            assert exc.status == 409, exc
        self.log["registered"].append(self.client.provider_id)
        while not self.stop.is_set():
            c, _, _ = patiently(lambda: self.client.next_challenge(0))
            if c is None:
                self.log["idle_polls"] += 1
                time.sleep(0.05)
                continue
            self.log["received"][c.challenge_id] = time.monotonic()
            params = c.params()
            roots = CpuBackend().run(params)
            try:
                req = patiently(lambda: self.client.commit(c.challenge_id, roots))  # noqa: B023
                openings = []
                for r, i in sorted({tuple(p) for p in req.pairs}):
                    values, path = CpuBackend().open(params, r, i, roots)
                    openings.append(Opening(r, i, values, tuple(path)).to_json())
                verdict = patiently(lambda: self.client.open(c.challenge_id, openings))  # noqa: B023
            except GatewayError as exc:  # the deadline passed while a replica was down: judged a timeout
                if not (exc.status == 409 and (exc.title == "Deadline passed" or "timeout" in exc.detail)):
                    raise
                self.log["late"].append(c.challenge_id)
                continue
            self.log["verdicts"][c.challenge_id] = verdict.model_dump(mode="json")
            self.log["verdict_at"][c.challenge_id] = time.monotonic()


class Settler(Worker):
    """Creates a job for a registered provider and settles it, again and again."""

    def __init__(self, client: GatewayClient, stop: threading.Event, log: dict) -> None:
        super().__init__(stop)
        self.client, self.log = client, log

    def work(self) -> None:
        while not self.stop.is_set():
            if not self.log["registered"]:
                time.sleep(0.05)
                continue
            pid = self.log["registered"][len(self.log["settlements"]) % len(self.log["registered"])]
            idem = secrets.token_hex(16)  # one per job meant: a resent create gets the same job back
            job = patiently(lambda: self._create(pid, idem))  # noqa: B023
            self.log["jobs_meant"] += 1
            self.log["settlements"][job.id] = patiently(lambda: self.client.settle(job.id)).model_dump(mode="json")  # noqa: B023
            time.sleep(0.2)

    def _create(self, pid: str, idem: str) -> Any:
        try:
            return self.client.create_job("renter", pid, "usd:1", idempotency_key=idem)
        except GatewayUnreachable as exc:
            if "ConnectError" not in str(exc):  # sent, and its answer lost: the job may exist
                self.log["creates_lost"] += 1
            raise


class Trainer(Worker):
    """A training job with a checkpoint upload, replayed by a validator, then settled."""

    def __init__(self, provider: GatewayClient, market: GatewayClient, validator: GatewayClient, validator_key,  # noqa: ANN001
                 store, bucket: Callable[[], list[str]], stop: threading.Event, log: dict) -> None:  # noqa: ANN001
        super().__init__(stop)
        self.provider, self.market, self.validator, self.validator_key = provider, market, validator, validator_key
        self.store, self.bucket, self.log = store, bucket, log

    def work(self) -> None:
        patiently(lambda: self.provider.register("trainer", [{"model": "NVIDIA H100", "vram_gib": 80}]))
        jid = patiently(lambda: self.market.create_job("renter", self.provider.provider_id, "usd:1", POLICY)).id
        self.log["training_job"] = jid
        run_reference_job(self.provider, jid, POLICY, self.store, 8)  # retries through crashes (tenacity)
        self.log["bucket_after_upload"] = self.bucket()  # the drawn segments' states, before their replays
        while any(a["state"] == "ready" for a in patiently(lambda: self.validator.training(jid))["audits"]):
            patiently(lambda: replay_job(self.validator, jid, self.validator_key))
        self.log["training_report"] = patiently(lambda: self.validator.training(jid))
        self.log["training_settlement"] = patiently(lambda: self.market.settle(jid)).model_dump(mode="json")


class HeldRequest(threading.Thread):
    """A POST whose body the test sends in part and then holds, so that the replica is reading it when it
    is killed; `cut` says whether the connection then broke under it (the answer lost, not refused)."""

    def __init__(self, base: str) -> None:
        super().__init__(daemon=True)
        self.base, self.started_body, self.release = base, threading.Event(), threading.Event()
        self.cut, self.outcome = False, "pending"
        self.start()

    PARTS = (b'{"name": "held', b'"}')

    def body(self):  # noqa: ANN201
        yield self.PARTS[0]
        self.started_body.set()
        self.release.wait(timeout=scaled(30))
        yield self.PARTS[1]

    def run(self) -> None:
        try:
            with httpx.Client(timeout=scaled(30)) as raw:
                answer = raw.post(f"{self.base}/v1/providers", content=self.body(),
                                  headers={"content-type": "application/json",
                                           "content-length": str(sum(map(len, self.PARTS)))})
            self.outcome = f"answered {answer.status_code}"
        except httpx.ConnectError as exc:
            self.outcome = f"refused ({type(exc).__name__})"
        except httpx.TransportError as exc:
            self.cut, self.outcome = True, f"cut off ({type(exc).__name__})"
        except Exception as exc:  # reported by the test's assertion, not lost in a thread
            self.outcome = f"failed ({type(exc).__name__}: {exc})"

    def wait_started(self, limit_s: float) -> None:
        assert self.started_body.wait(timeout=limit_s), "the held request never started"
        time.sleep(0.2)  # the head and the first part on the wire, read by the replica

    def join(self, timeout: float | None = None) -> None:
        self.release.set()
        super().join(timeout)


def start_replicas(url: str, data_dir, **env: str) -> list[Server]:  # noqa: ANN001
    servers = [Server(url, data_dir, **env) for _ in range(REPLICAS)]
    errors: list[Exception] = []

    def start(server: Server) -> None:
        try:
            server.start()
        except Exception as exc:
            errors.append(exc)

    migrate.upgrade(url)  # here, once: then the replicas find the schema current
    # one after another: each start's readiness limit (tests/support/server.py) is sized for one gateway
    # starting on this machine, and three importing and connecting at once on two busy cores once took longer
    for s in servers:
        start(s)
        if errors:
            break
    if errors:
        for s in servers:
            s.stop()
        raise errors[0]
    return servers


def test_three_replicas_one_killed_and_restarted_lose_and_double_nothing(postgres_url, s3, tmp_path):
    started = time.monotonic()
    env = {"GPUPROOF_CHALLENGE_INTERVAL_S": "0",
           "GPUPROOF_JOB_CHALLENGE_INTERVAL_S": "0", "GPUPROOF_REDIS_URL": REDIS,
           "GPUPROOF_REDIS_PREFIX": f"gptest-{secrets.token_hex(4)}:",
           "GPUPROOF_REGISTRATIONS_PER_IP_PER_HOUR": str(REGISTRATION_BUDGET),
           "GPUPROOF_PROVIDER_RATE_PER_S": "1000", "GPUPROOF_IP_RATE_PER_S": "1000", **s3.env()}
    servers = start_replicas(postgres_url, tmp_path / "data", **env)
    boot_s = time.monotonic() - started
    balancer = RoundRobin([s.port for s in servers])
    db = Database(postgres_url)
    market_token = admin.create_api_key(db, "market", ["jobs", "settle"])
    validator_token = admin.create_api_key(db, "validator", ["replay"])
    db.engine.dispose()

    def client(**kwargs: Any) -> GatewayClient:
        return GatewayClient(servers[0].base, timeout=scaled(15), transport=balancer, **kwargs)

    market, validator, reader = client(api_key=market_token), client(api_key=validator_token), client()
    validator_key = signatures.new_private_key()
    patiently(lambda: market.register_validator(signatures.public_key_bytes(validator_key).hex(), "validator"))
    stop = threading.Event()
    log: dict = {"registered": [], "verdicts": {}, "settlements": {}, "late": [], "idle_polls": 0,
                 "received": {}, "verdict_at": {}, "jobs_meant": 0, "creates_lost": 0}
    providers = [Provider(client(key=signatures.new_private_key()), stop, log) for _ in range(2)]
    trainer = Trainer(client(key=signatures.new_private_key()), market, validator, validator_key,
                      tmp_path / "store", s3.keys, stop, log)
    workers = [*providers, Settler(market, stop, log), trainer]
    heads: list[TreeHead] = []
    victim = servers[1]
    try:
        for w in workers:
            w.start()
        deadline = time.monotonic() + scaled(30)
        while len(log["verdicts"]) < 3 and time.monotonic() < deadline:  # the run is under way
            heads.append(patiently(reader.tree_head))
            time.sleep(0.1)
        heads.append(patiently(reader.tree_head))
        held = HeldRequest(victim.base)  # a request the victim has begun to read when it is killed
        held.wait_started(scaled(10))
        served_before = balancer.served[victim.port]
        inflight_at_kill = balancer.inflight[victim.port]  # the workload's, besides the held one
        victim.kill()  # SIGKILL, mid-run
        killed_at = time.monotonic()
        judged_before_kill = set(log["verdicts"]) | set(log["late"])
        held.join(scaled(10))
        for _ in range(5):
            heads.append(patiently(reader.tree_head))  # the others answer meanwhile
            time.sleep(0.1)
        victim.start()
        restarted_at = time.monotonic()
        restart_s = restarted_at - killed_at
        served_at_restart = balancer.served[victim.port]
        with httpx.Client(base_url=victim.base, timeout=scaled(10)) as direct:  # the restarted one itself
            heads.append(TreeHead.parse(direct.get("/v1/log/head").json()))
        trainer.join(timeout=scaled(60))
        deadline = time.monotonic() + scaled(10)
        while (sum(t > restarted_at for t in log["verdict_at"].values()) < 3
               or balancer.served[victim.port] == served_at_restart) and time.monotonic() < deadline:
            heads.append(patiently(reader.tree_head))
            time.sleep(0.1)
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=scaled(60))
    try:
        errors = [w.error for w in workers if w.error]
        assert not errors, errors
        assert not trainer.is_alive(), "the training job did not finish"

        # every head is the one gateway's, and extends the one read before it
        assert len({h.public_key for h in heads}) == 1 and len({h.origin for h in heads}) == 1  # one log
        checked = 0
        for old, new in zip(heads, heads[1:], strict=False):
            assert new.size >= old.size, (old.size, new.size)
            if old.size and new.size > old.size:
                logproofs.verify_consistency(old, new, patiently(lambda: reader.consistency_proof(
                    old.size, new.size)).proof)  # noqa: B023
                checked += 1
        assert checked >= 3, "too few distinct heads to mean anything"

        # the registration budget of this address holds across the replicas: three replicas with their own
        # buckets would take 3 x the budget
        codes, audience = [], servers[0].audience
        with httpx.Client(timeout=scaled(10)) as raw:
            for i in range(4 * REGISTRATION_BUDGET):
                key = signatures.new_private_key()
                body = registration(key, f"flood {i}", [{"model": "cpu-reference", "vram_gib": 1}], audience=audience)
                codes.append(raw.post(f"{servers[i % REPLICAS].base}/v1/providers", **body))
        accepted = [r for r in codes if r.status_code == 201]
        refused = [r for r in codes if r.status_code == 429]
        assert len(accepted) + len(refused) == len(codes), {r.status_code for r in codes}
        assert all(int(r.headers["Retry-After"]) >= 1 for r in refused)
        # the test's own three providers took from the same budget (a retry lost with the killed replica
        # may have taken one more)
        assert len(accepted) <= REGISTRATION_BUDGET - 3, len(accepted)
        assert refused, "the flood was never limited"
        heads.append(patiently(reader.tree_head))  # the last, after everything
        logproofs.verify_consistency(heads[-2], heads[-1], reader.consistency_proof(heads[-2].size,
                                                                                    heads[-1].size).proof)

        engine = create_engine(postgres_url)
        with engine.connect() as c:
            judged = dict(c.execute(select(Challenge.id, Challenge.outcome).where(Challenge.state == "judged")).all())
            entries = c.execute(select(LogEntry.idx, LogEntry.kind, LogEntry.body).order_by(LogEntry.idx)).all()
            jobs = {j.id: j for j in c.execute(select(Job)).all()}
            challenges = dict(c.execute(select(Challenge.id, Challenge.state)).all())
            audits = c.execute(select(SegmentAudit)).all()
        engine.dispose()
    finally:
        for s in servers:
            s.stop()

    # verdicts: none lost, none changed, none wrong (honest answers are always correct)
    assert len(log["verdicts"]) >= 3, ("too little work got through to mean anything", log)
    for cid, verdict in log["verdicts"].items():
        assert judged.get(cid) == verdict["outcome"], cid
        assert verdict["correctness"] == "pass", verdict
    assert all(judged.get(cid, "fail") == "fail" for cid in log["late"]), log["late"]
    # the kill cut requests off: the held one (the victim had begun reading it) and any of the workload's
    assert held.cut, f"the request held open on the victim was not cut off by the kill: {held.outcome}"
    assert balancer.served[victim.port] and served_before > 0, "the victim carried no load before the kill"
    # only challenges the kill and the restart touched may have failed: received before the restarted
    # replica was ready and not yet judged when the victim died. They miss their deadline when a request
    # cut off by the kill is retried too late, or are judged slower than claimed when proved while the
    # replica restarts (its start takes the CPU that this test's CPU provers prove on); at most two per
    # provider, as each works on one challenge at a time. A challenge received later must pass.
    touched = {cid for cid, at in log["received"].items() if at <= restarted_at} - judged_before_kill
    failed = {cid for cid, v in log["verdicts"].items() if v["outcome"] != "pass"} | set(log["late"])
    why = {cid: (log["verdicts"].get(cid, {}).get("timing", "late"), round(log["received"][cid] - killed_at, 2),
                 round(log["verdict_at"].get(cid, killed_at) - killed_at, 2), round(restarted_at - killed_at, 2))
           for cid in failed}  # timing; received and judged relative to the kill; the restart, likewise
    assert failed <= touched, why
    assert len(failed) <= 2 * len(providers), why
    assert all(log["verdicts"][cid]["timing"] == "slower-than-claimed" for cid in failed - set(log["late"])), why
    # verdicts arrived after the restart, some of the requests served by the restarted replica itself
    after_restart = sum(t > restarted_at for t in log["verdict_at"].values())
    assert after_restart >= 3, f"only {after_restart} verdicts after the restart"
    assert balancer.served[victim.port] > served_at_restart, "the restarted replica served nothing"
    # jobs: exactly one per create the settler meant, whether or not its answer was lost and the create
    # resent (the same Idempotency-Key gets the same job), and the training job
    settler_jobs = [j for jid, j in jobs.items() if jid != log["training_job"]]
    assert len(settler_jobs) == log["jobs_meant"], (len(settler_jobs), log["jobs_meant"], log["creates_lost"])
    assert len(jobs) == log["jobs_meant"] + 1
    assert set(log["settlements"]) <= set(jobs)
    assert all(challenges.get(cid) is not None for cid in log["received"])
    # the log: one sequence, one verdict entry per judged challenge, one registration per provider
    assert [e.idx for e in entries] == list(range(len(entries)))
    assert entries[-1].idx + 1 == heads[-1].size
    bodies = [(e.kind, json.loads(e.body)) for e in entries]
    verdict_ids = [b["challenge_id"] for k, b in bodies if k == "verdict"]
    assert len(verdict_ids) == len(set(verdict_ids)) and set(verdict_ids) == set(judged)
    registered = [b["provider_id"] for k, b in bodies if k == "registration"]
    assert len(registered) == len(set(registered)) and set(log["registered"]) <= set(registered)
    # settlements: every decision a client saw is on record; final ones never changed
    for jid, decision in log["settlements"].items():
        if decision["final"]:
            assert jobs[jid].decision == decision["decision"] and jobs[jid].final
    # the training job: each drawn segment's state is one object in the bucket (content-addressed) until
    # its replay is judged, then deleted; each audit judged once; the job settled
    report = log["training_report"]
    assert report["audits"] and all(a["state"] == "judged" for a in report["audits"]), report["audits"]
    judged_audits = [b["verdict"]["audit_id"] for k, b in bodies if k == "training-verdict"]
    assert sorted(judged_audits) == sorted(a["audit_id"] for a in report["audits"])
    uploads = {a.upload_sha256 for a in audits if a.upload_sha256}
    assert len(uploads) == len(report["audits"])
    assert sorted(k.rsplit("/", 1)[-1] for k in log["bucket_after_upload"]) == sorted(uploads)
    assert s3.keys() == [], "an upload outlived its judged audit"
    assert log["training_settlement"]["id"] == log["training_job"]

    served = {s.port: balancer.served[s.port] for s in servers}
    total_s = time.monotonic() - started
    print(f"\n{REPLICAS} replicas up in {boot_s:.1f} s; one killed and back in {restart_s:.1f} s; "
          f"{len(log['verdicts'])} verdicts ({collections.Counter(v['outcome'] for v in log['verdicts'].values())}),"
          f" {len(log['late'])} late, failed {sorted(why.values())}, {len(log['settlements'])} settlements, "
          f"{len(entries)} log entries, "
          f"{len(heads)} heads ({checked} consistency proofs); requests per replica {served}; at the kill "
          f"{inflight_at_kill} in flight on the victim, {balancer.cut[victim.port]} cut off, held request "
          f"{held.outcome}; {after_restart} verdicts after the restart; jobs {len(settler_jobs)} for "
          f"{log['jobs_meant']} meant ({log['creates_lost']} creates lost); flood: "
          f"{len(accepted)} of {len(codes)} registrations accepted (budget {REGISTRATION_BUDGET}, 3 used); "
          f"{total_s:.1f} s in all")
    assert min(served.values()) > 0
