"""The gateway as it runs: uvicorn processes on loopback, a provider over real HTTP with the CPU backend,
and two gateway processes on one database behaving as one service. Waits, and the time an honest
provider's challenge allows it, are scaled to this machine (tests/support/calibrate.py)."""

from __future__ import annotations

import json

import httpx
import pytest
from gpuproof.client import registration, signed_headers
from gpuproof.kernels.backend import Opening
from gpuproof.kernels.reference import CpuBackend
from gpuproof.kernels.spec import ChallengeParams
from gpuproof.verifier import signatures, transcript

from tests.support.calibrate import honest_test_shape, scaled
from tests.support.server import Server


@pytest.fixture
def servers(database_url, tmp_path):
    started = []

    def start() -> Server:
        # an honest provider's challenges allow it 1 s (scaled) of HTTP and queueing beyond the overhead
        server = Server(database_url, tmp_path / "data", GPUPROOF_VERIFY_TEST_SHAPE=honest_test_shape(1)).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def signed_post(client: httpx.Client, key, pid: str, path: str, payload: dict) -> httpx.Response:  # noqa: ANN001
    import json

    body = json.dumps(payload).encode()
    audience = client.get("/v1/identity").json()["audience"]
    return client.post(path, content=body, headers=signed_headers(key, pid, "POST", path, body, audience=audience))


def test_provider_flow_over_http(servers):
    server = servers()
    key = signatures.new_private_key()
    with httpx.Client(base_url=server.base, timeout=scaled(30)) as client:
        pid = client.post("/v1/providers", **registration(key, "http", [{"model": "cpu-reference", "vram_gib": 4}],
                                                          audience=server.audience)).json()["id"]
        c = signed_post(client, key, pid, f"/v1/providers/{pid}/challenges", {"device": 0}).json()
        params = ChallengeParams.from_json(c)
        roots = CpuBackend().run(params)
        req = signed_post(client, key, pid, f"/v1/challenges/{c['challenge_id']}/commitment",
                          {"roots": [r.hex() for r in roots]}).json()
        openings = []
        for r, i in sorted({tuple(p) for p in req["pairs"]}):
            values, path = CpuBackend().open(params, r, i, roots)
            openings.append(Opening(r, i, values, tuple(path)).to_json())
        verdict = signed_post(client, key, pid, f"/v1/challenges/{c['challenge_id']}/openings",
                              {"openings": openings}).json()
        assert verdict["outcome"] == "pass", verdict
        doc = client.get(f"/v1/challenges/{c['challenge_id']}/transcript").json()
        assert transcript.recheck(doc)[1] == []


def test_two_gateway_processes_on_one_database_are_one_service(servers):
    a, b = servers(), servers()
    key = signatures.new_private_key()
    with httpx.Client(base_url=a.base, timeout=scaled(30)) as ca, \
            httpx.Client(base_url=b.base, timeout=scaled(30)) as cb:
        pid = ca.post("/v1/providers", **registration(key, "two", [{"model": "cpu-reference", "vram_gib": 4}],
                                                      audience=a.audience)).json()["id"]
        c = signed_post(ca, key, pid, f"/v1/providers/{pid}/challenges", {"device": 0}).json()  # issued on A
        params = ChallengeParams.from_json(c)
        roots = CpuBackend().run(params)
        req = signed_post(cb, key, pid, f"/v1/challenges/{c['challenge_id']}/commitment",  # committed on B
                          {"roots": [r.hex() for r in roots]}).json()
        openings = []
        for r, i in sorted({tuple(p) for p in req["pairs"]}):
            values, path = CpuBackend().open(params, r, i, roots)
            openings.append(Opening(r, i, values, tuple(path)).to_json())
        verdict = signed_post(ca, key, pid, f"/v1/challenges/{c['challenge_id']}/openings",  # opened on A
                              {"openings": openings}).json()
        assert verdict["outcome"] == "pass", verdict
        head_a, head_b = ca.get("/v1/log/head").json(), cb.get("/v1/log/head").json()
        assert head_a["root"] == head_b["root"] and head_a["public_key"] == head_b["public_key"]
        assert cb.get(f"/v1/providers/{pid}/trust").json()["evidence"] == 1


def test_a_commitment_is_timed_when_it_arrived_not_when_the_gateway_got_to_it(tmp_path):
    """One worker thread, busy for 2 s (another provider's poll waits on the database's write lock, held
    by the test) while a commitment arrives: the gateway answers late, but the measured time is the
    provider's (queueing under load is the gateway's own). The 2 s hold and the 1 s within which the
    arrival must be stamped are both scaled to this machine, so the test tells the two apart as well."""
    import sqlite3
    import threading
    import time

    from gpuproof.client import GatewayClient

    db = tmp_path / "gw.db"
    server = Server(f"sqlite:///{db}", tmp_path / "data", GPUPROOF_WORKER_THREADS="1").start()
    try:
        with GatewayClient(server.base, key=signatures.new_private_key()) as client, \
                GatewayClient(server.base, key=signatures.new_private_key()) as other:
            client.register("timed", [{"model": "cpu-reference", "vram_gib": 1}])
            other.register("busy", [{"model": "cpu-reference", "vram_gib": 1}])
            c, probe, _ = client.next_challenge(0)
            roots = CpuBackend().run(c.params())
            lock = sqlite3.connect(db, isolation_level=None)
            lock.execute("BEGIN IMMEDIATE")  # every writer now waits for this
            busy = threading.Thread(target=lambda: other.next_challenge(0))  # holds the only worker thread
            busy.start()
            time.sleep(0.5)
            answer: dict = {}
            sent = time.time()
            poster = threading.Thread(target=lambda: answer.update(request=client.commit(c.challenge_id, roots)))
            poster.start()
            hold = scaled(2.0)
            time.sleep(hold)
            lock.execute("COMMIT")
            poster.join(timeout=scaled(30))
            busy.join(timeout=scaled(30))
            answered = time.time()
            lock.close()
            assert answer["request"].pairs, answer
            assert answered - sent >= hold
            row = sqlite3.connect(db).execute("SELECT received_at, issued_at FROM challenges").fetchone()
            assert row[0] - sent < hold / 2, (row[0] - sent, "received_at must be the arrival, not the handling")
    finally:
        server.stop()


def test_concurrent_retries_on_two_processes_judge_a_challenge_once(servers, database_url):
    """The same openings (and the same commitment) sent 8 times at once, half to each of two gateway
    processes: one verdict on record and in the log, and every caller told the same thing. (On
    PostgreSQL two transactions can both read the row before either writes it: the row lock decides.)"""
    import threading

    from gpuproof.gateway.models import LogEntry
    from sqlalchemy import create_engine, select

    a, b = servers(), servers()
    key = signatures.new_private_key()
    clients = [httpx.Client(base_url=s.base, timeout=scaled(60)) for s in (a, b)]
    engine = create_engine(database_url)
    try:
        pid = clients[0].post("/v1/providers", **registration(key, "race", [{"model": "cpu-reference", "vram_gib": 4}],
                                                              audience=a.audience)).json()["id"]
        for attempt in range(3):
            c = signed_post(clients[0], key, pid, f"/v1/providers/{pid}/challenges", {"device": 0}).json()
            params = ChallengeParams.from_json(c)
            roots = CpuBackend().run(params)

            def together(path: str, payload: dict) -> list[httpx.Response]:
                start, answers = threading.Barrier(8), []

                def send(i: int) -> None:
                    start.wait()
                    answers.append(signed_post(clients[i % 2], key, pid, path, payload))

                threads = [threading.Thread(target=send, args=(i,)) for i in range(8)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(timeout=scaled(120))
                return answers

            cid = c["challenge_id"]
            requests = together(f"/v1/challenges/{cid}/commitment", {"roots": [r.hex() for r in roots]})
            assert [r.status_code for r in requests] == [200] * 8, [r.text for r in requests]
            pairs = {json.dumps(r.json()["pairs"]) for r in requests}
            assert len(pairs) == 1, "callers were given different opening requests"
            openings = []
            for r, i in sorted({tuple(p) for p in requests[0].json()["pairs"]}):
                values, path = CpuBackend().open(params, r, i, roots)
                openings.append(Opening(r, i, values, tuple(path)).to_json())
            verdicts = together(f"/v1/challenges/{cid}/openings", {"openings": openings})
            assert [r.status_code for r in verdicts] == [200] * 8, [r.text for r in verdicts]
            assert {r.json()["outcome"] for r in verdicts} == {"pass"}
            with engine.connect() as conn:
                bodies = conn.execute(select(LogEntry.body).where(LogEntry.kind == "verdict")).scalars().all()
            logged = [json.loads(body)["challenge_id"] for body in bodies]
            assert logged.count(cid) == 1, f"attempt {attempt}: the verdict was logged {logged.count(cid)} times"
            with engine.begin() as conn:  # due again at once
                conn.exec_driver_sql("UPDATE devices SET next_due_at = 0")
    finally:
        for client in clients:
            client.close()
        engine.dispose()


class Racing:
    """A provider's GatewayClient whose training writes are each sent 8 times at once, half to each of two
    gateway processes (retries arriving together, as after a timeout); each caller's answer is kept."""

    RACED = ("post_checkpoint", "close_run", "upload_state", "open_segment")

    def __init__(self, a, b) -> None:  # noqa: ANN001 - two GatewayClients with the same key
        self.clients, self.answers = (a, b), {name: [] for name in self.RACED}
        self.provider_id = a.provider_id

    def __getattr__(self, name: str):  # noqa: ANN204
        if name not in self.RACED:
            return getattr(self.clients[0], name)

        def raced(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            import threading

            start, results = threading.Barrier(8), [None] * 8

            def send(i: int) -> None:
                start.wait()
                try:
                    results[i] = getattr(self.clients[i % 2], name)(*args, **kwargs)
                except Exception as exc:  # kept, and reported by the test
                    results[i] = exc

            threads = [threading.Thread(target=send, args=(i,)) for i in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=scaled(120))
            self.answers[name].append(results)
            errors = [r for r in results if isinstance(r, Exception)]
            if errors:
                raise AssertionError(f"{name}: {len(errors)} of 8 callers failed: {errors[:2]}")
            return results[0]

        return raced


def test_concurrent_training_retries_on_two_processes_count_once(servers, database_url, tmp_path):
    """Every checkpoint, the close and each audit's upload and openings sent 8 times at once to two
    processes: each stored and logged once, one draw of audits, and every caller the same answer."""
    from gpuproof.agent.training import run_reference_job
    from gpuproof.client import GatewayClient
    from gpuproof.gateway import admin
    from gpuproof.gateway.db import Database
    from gpuproof.gateway.models import LogEntry, SegmentAudit
    from sqlalchemy import create_engine, select

    a, b = servers(), servers()
    key = signatures.new_private_key()
    db = Database(database_url)
    market = GatewayClient(a.base, admin.create_api_key(db, "market", ["jobs"]))
    db.dispose()
    pa, pb = GatewayClient(a.base, key=key), GatewayClient(b.base, key=key)
    pa.register("trainer", [{"model": "NVIDIA H100", "vram_gib": 80}])
    policy = {"interval": 4, "segments": 2, "chunks": 6, "mode": "exact",
              "workload": {"name": "mlp", "params": {"seed": 7, "hidden": 32}}}
    jid = market.create_job("renter", str(pa.provider_id), "usd:1", policy).id
    racing = Racing(pa, pb)
    report = run_reference_job(racing, jid, policy, tmp_path / "store", 16)  # type: ignore[arg-type]
    for name, rounds in racing.answers.items():
        for results in rounds:
            errors = [r for r in results if isinstance(r, Exception)]
            assert not errors, f"{name}: {errors[:2]}"
            if name != "close_run":  # (close's answer lists audits whose uploads raced in later)
                assert all(r == results[0] for r in results), f"{name}: callers were told different things"
    assert len(racing.answers["post_checkpoint"]) == 5 and len(racing.answers["open_segment"]) == 2
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            kinds = [k for k in conn.execute(select(LogEntry.kind)).scalars()]
            audits = conn.execute(select(SegmentAudit.id).where(SegmentAudit.job_id == jid)).scalars().all()
    finally:
        engine.dispose()
    assert kinds.count("checkpoint") == 5 and kinds.count("training-close") == 1, kinds
    assert len(audits) == 2 and all(a["state"] == "ready" for a in report["audits"]), report["audits"]


def test_an_upload_is_streamed_to_disk_not_held_in_memory(database_url, tmp_path):
    """A 160 MiB state upload, signed and sent by a provider with an open audit: the gateway process's
    anonymous memory (RssAnon, sampled every few ms while it arrives and is checked) grows far less
    than the upload; an unauthenticated sender could otherwise make it hold many such bodies at once."""
    import threading
    import time

    from gpuproof.client import GatewayClient, GatewayError
    from gpuproof.gateway import admin
    from gpuproof.gateway.db import Database

    from tests.support.training import commit_and_close

    server = Server(database_url, tmp_path / "data").start()
    try:
        db = Database(database_url)
        market = GatewayClient(server.base, admin.create_api_key(db, "market", ["jobs"]))
        db.dispose()
        provider = GatewayClient(server.base, key=signatures.new_private_key(), timeout=scaled(120))
        provider.register("big", [{"model": "NVIDIA H100", "vram_gib": 80}])
        policy = {"interval": 4, "segments": 1, "chunks": 2, "mode": "exact",
                  "workload": {"name": "mlp", "params": {"seed": 7, "hidden": 32}}}
        jid = market.create_job("renter", str(provider.provider_id), "usd:1", policy).id
        audit = commit_and_close(provider, jid)["audits"][0]

        def rss_anon_mib() -> float:
            with open(f"/proc/{server.pid}/status") as fh:
                return next(int(line.split()[1]) for line in fh if line.startswith("RssAnon:")) / 1024

        before, peak, done = rss_anon_mib(), [0.0], threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], rss_anon_mib())
                time.sleep(0.002)

        sampler = threading.Thread(target=sample)
        sampler.start()
        size = 160 * 2**20
        try:
            provider.upload_state(audit["audit_id"], bytes(size))  # not the committed state: judged a failure
        except GatewayError as exc:
            raise AssertionError(f"the upload was refused: {exc}") from None
        finally:
            done.set()
            sampler.join()
        report = market.training(jid)["audits"][0]
        assert report["outcome"] == "fail" and "bytes" in report["verdict"]["reason"], report
        assert peak[0] - before < 48, f"RssAnon {before:.0f} -> {peak[0]:.0f} MiB for a {size >> 20} MiB upload"
    finally:
        server.stop()
