"""Issue 18, "cheap to send, dear to serve": a request that costs its sender nothing costs the gateway
little too. Each test reproduces one finding and failed on the code before its fix."""

from __future__ import annotations

import hashlib
import json
import secrets
import time

import pytest
from fastapi.testclient import TestClient
from gpuproof.client import GatewayClient, signed_headers, signed_upload_headers
from gpuproof.gateway import admin
from gpuproof.verifier import signatures
from sqlalchemy import text

from tests.gateway.test_api import Agent, assert_problem
from tests.gateway.test_training import POLICY
from tests.support.calibrate import scaled
from tests.support.training import commit_and_close

BODY = bytes(4 * 2**20)  # a 4 MiB state: on the old code every byte reached the disk before any check


class BodyCounter:
    """ASGI wrapper counting the request-body bytes the application pulled from the client."""

    def __init__(self, app) -> None:  # noqa: ANN001
        self.app, self.read = app, 0

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        async def counted():  # noqa: ANN202
            message = await receive()
            if message["type"] == "http.request":
                self.read += len(message.get("body", b""))
            return message

        await self.app(scope, counted if scope["type"] == "http" else receive, send)


def _spooled_bytes(gateway) -> int:  # noqa: ANN001
    uploads = gateway.settings.data_dir / "uploads"
    return sum(p.stat().st_size for p in uploads.rglob("*") if p.is_file()) if uploads.exists() else 0


def test_unsigned_or_misdirected_uploads_are_refused_before_a_byte_is_read(gateway):
    counter = BodyCounter(gateway.app)
    client = TestClient(counter)
    owner = GatewayClient("http://testserver", key=signatures.new_private_key(), transport=gateway.client._transport)
    owner.register("owner", [{"model": "NVIDIA H100", "vram_gib": 80}])
    market = GatewayClient("http://testserver", admin.create_api_key(gateway.app.state.gp.db, "market", ["jobs"]),
                           transport=gateway.client._transport)
    job_id = market.create_job("renter", owner.provider_id, "usd:1", POLICY).id
    foreign = commit_and_close(owner, job_id)["audits"][0]["audit_id"]  # owner's audit, expecting an upload
    stranger = Agent(gateway, "stranger")
    random_path = f"/v1/audits/{secrets.token_hex(16)}/state"
    foreign_path = f"/v1/audits/{foreign}/state"

    aud = gateway.audience

    def put(path: str, headers: dict[str, str]):  # noqa: ANN202
        return client.put(path, content=BODY, headers=headers)

    cases = [
        (put(random_path, {"Content-Type": "application/octet-stream"}), 401, "X-Gpuproof-Signature"),
        (put(foreign_path, {"Content-Type": "application/octet-stream"}), 401, "X-Gpuproof-Signature"),
        # the owner's id, signed by another key
        (put(foreign_path, signed_upload_headers(stranger.key, owner.provider_id, "PUT", foreign_path, BODY,
                                                 audience=aud)),
         401, "signature"),
        # signed the old way (over the body's hash without declaring it): no declared hash to check
        (put(foreign_path, signed_headers(stranger.key, stranger.id, "PUT", foreign_path, BODY, audience=aud,
                                          content_type="application/octet-stream")), 401, "Content-Sha256"),
        # signed right, for an audit that is not there or not the signer's
        (put(random_path, signed_upload_headers(stranger.key, stranger.id, "PUT", random_path, BODY, audience=aud)),
         404, "no audit"),
        (put(foreign_path, signed_upload_headers(stranger.key, stranger.id, "PUT", foreign_path, BODY, audience=aud)),
         403, "another provider"),
    ]
    for response, status, detail in cases:
        assert_problem(response, status, detail)
    assert counter.read == 0, f"the gateway read {counter.read} body bytes of refused uploads"
    assert _spooled_bytes(gateway) == 0


def test_an_upload_is_held_to_its_signed_hash_and_length(gateway):
    owner = GatewayClient("http://testserver", key=signatures.new_private_key(), transport=gateway.client._transport)
    owner.register("owner", [{"model": "NVIDIA H100", "vram_gib": 80}])
    market = GatewayClient("http://testserver", admin.create_api_key(gateway.app.state.gp.db, "market", ["jobs"]),
                           transport=gateway.client._transport)
    job_id = market.create_job("renter", owner.provider_id, "usd:1", POLICY).id
    audit = commit_and_close(owner, job_id)["audits"][0]["audit_id"]
    path = f"/v1/audits/{audit}/state"
    aud = gateway.audience
    headers = signed_upload_headers(owner.key, owner.provider_id, "PUT", path, BODY, audience=aud)
    swapped = gateway.client.put(path, content=BODY[:-1] + b"\x01", headers=headers)  # same length, other bytes
    assert_problem(swapped, 400, "SHA-256")
    headers = signed_upload_headers(owner.key, owner.provider_id, "PUT", path, BODY, audience=aud)
    headers["X-Gpuproof-Content-Sha256"] = hashlib.sha256(b"other").hexdigest()  # not what was signed
    assert_problem(gateway.client.put(path, content=BODY, headers=headers), 401, "signature")
    assert _spooled_bytes(gateway) == 0
    assert market.training(job_id)["audits"][0]["uploaded"] is False


def test_a_registration_flood_from_one_source_is_cut_and_others_still_register(database_url, tmp_path):
    from gpuproof.client import registration
    from gpuproof.gateway.app import create_app
    from gpuproof.gateway.settings import Settings

    from tests.support.clock import stopped_limiter

    settings = Settings(data_dir=tmp_path / "d", database_url=database_url, registrations_per_ip_per_hour=10,
                        registrations_per_s_global=10, ip_rate_per_s=10_000, maintenance_interval_s=0)
    app = create_app(settings)
    with TestClient(app, client=("203.0.113.7", 4000)) as flood, \
            TestClient(app, client=("198.51.100.9", 4000)) as calm:
        clock = stopped_limiter(app)  # time stands still: the result does not depend on this machine's speed

        def register(client: TestClient):  # noqa: ANN202
            body = registration(signatures.new_private_key(), "sybil", [{"model": "cpu-reference", "vram_gib": 8}],
                                audience=app.state.gp.audience)
            return client.post("/v1/providers", **body)

        codes = [register(flood).status_code for _ in range(30)]
        assert codes == [201] * 10 + [429] * 20  # the source's hourly budget, then cut at the door
        limited = register(flood)
        assert_problem(limited, 429, "registrations an hour from this address")
        assert int(limited.headers["Retry-After"]) >= 300  # one registration per 360 s comes back
        assert register(calm).status_code == 201  # another source is unaffected
        burst = [register(TestClient(app, client=(f"192.0.2.{i}", 4000))) for i in range(1, 40)]
        cut = [r for r in burst if r.status_code == 429]  # many sources: the global burst (2 s at 10/s) holds
        assert [r.status_code for r in burst].count(201) == 20 - 1 - 10 and cut
        assert_problem(cut[0], 429, "registrations a second")
        clock.advance(1.0)  # ten registrations a second come back, whoever sends them
        assert register(calm).status_code == 201
        with app.state.gp.db.reader() as reader:
            assert reader.execute(text("select count(*) from providers")).scalar_one() == 10 + 1 + 9 + 1


def test_a_zero_row_cheat_is_refused_before_the_verifier_pays_for_y(monkeypatch):
    """A default-size H100 challenge answered with one constant root (an all-zero matrix's, valid paths)
    and all-zero rows costs the prover ~2 ms; it used to cost the verifier y = B.T x over all of B (the
    work an honest answer costs). Now a few columns of every row are checked exactly first."""
    import numpy as np
    from gpuproof.kernels import merkle
    from gpuproof.kernels.backend import Opening
    from gpuproof.verifier import freivalds
    from gpuproof.verifier.openings import row_subtree_root
    from gpuproof.verifier.protocol import Verifier

    v = Verifier()
    challenge = v.issue("NVIDIA H100 80GB HBM3", now=0.0)
    p = challenge.params
    zeros = np.zeros(p.n, dtype=np.int64)
    node, path = row_subtree_root(zeros), []
    for _ in range(p.m.bit_length() - 1):  # m is a power of two: every sibling is the zero subtree's root
        path.append(node)
        node = merkle.node_hash(node, node)
    commitment = v.commit(challenge, [node] * p.rounds, received_at=challenge.thresholds.expected_s)
    request = v.request_openings(challenge, commitment)
    openings = [Opening(r, i, zeros, tuple(path)) for r, i in request.pairs]

    def y_vector(*args):  # noqa: ANN002, ANN202
        raise AssertionError("y = B.T x was computed for a made-up answer")

    monkeypatch.setattr(freivalds, "y_vector", y_vector)
    verdict = v.judge(challenge, commitment, request, openings)
    assert verdict.outcome == "fail" and verdict.failure.reason == "wrong-value"
    assert "wrong value at column" in verdict.failure.detail


def test_a_providers_page_costs_the_same_whatever_the_number_of_providers(database_url, tmp_path, monkeypatch):
    """3,000 free registrations made `GET /v1/providers?min_lower_bound=0&limit=1` take 23 s and `GET /`
    4.1 s: both computed every provider's trust. Counted, not timed: the SQL statements a page runs are the
    same with 12 providers as with 60 (the filter and the order are indexed columns, models.ProviderScore;
    the dashboard's page is made 5 rows, so that both counts fill it)."""
    from gpuproof.client import registration
    from gpuproof.gateway import dashboard
    from gpuproof.gateway.app import create_app
    from gpuproof.gateway.settings import Settings
    from sqlalchemy import event

    # pages and totals read afresh every time (no GPUPROOF_PAGE_CACHE_S, GPUPROOF_LIST_TOTALS_S): what is counted
    # is the cost of making a page, which a cached page would hide
    settings = Settings(data_dir=tmp_path / "d", database_url=database_url, registrations_per_ip_per_hour=10_000,
                        registrations_per_s_global=10_000, ip_rate_per_s=10_000, maintenance_interval_s=0,
                        page_cache_s=0, list_totals_s=0)
    monkeypatch.setattr(dashboard, "MAX_LISTED", 5)
    app = create_app(settings)
    db = app.state.gp.db
    statements: list[str] = []

    def count(conn, cursor, statement, *args) -> None:  # noqa: ANN001
        # not the webhook outbox's delivery loop (it polls meanwhile), nor the signed log head the dashboard
        # shows (log2 of the log's size point lookups: tests/gateway/test_log_tree.py counts those)
        if not any(table in statement for table in ("webhook", "log_nodes", "log_entries")):
            statements.append(statement)

    def cost(client: TestClient, path: str) -> int:
        """Statements of the page: the fewest of three reads. The listener counts every thread's statements,
        so a read may also see a pooled connection's set-up or a background task's (CI once counted one more
        in one read of one page); a page whose cost grows with the providers shows it in every read."""
        counts = []
        for _ in range(3):
            statements.clear()
            assert client.get(path).status_code == 200, path
            counts.append(len(statements))
        return min(counts)

    pages = ("/v1/providers?min_lower_bound=0&limit=1", "/v1/providers?min_lower_bound=0.01&limit=5", "/?sort=lower",
             "/?sort=name&order=asc", "/?sort=evidence")
    with TestClient(app) as client:
        for engine in {db.engine, db.write_engine}:
            event.listen(engine, "before_cursor_execute", count)
        costs = []
        for total in (12, 60):
            while client.get("/v1/providers?limit=1").json()["total"] < total:
                body = registration(signatures.new_private_key(), "sybil", [{"model": "cpu-reference", "vram_gib": 8}],
                                    audience=app.state.gp.audience)
                assert client.post("/v1/providers", **body).status_code == 201
            costs.append([cost(client, p) for p in pages])
        page = client.get("/v1/providers?min_lower_bound=0&limit=5&offset=50").json()
    assert costs[0] == costs[1], dict(zip(pages, zip(*costs, strict=True), strict=True))
    assert page["total"] == 60 and len(page["items"]) == 5  # every provider has a stored score, filtered in SQL


def test_the_stored_score_follows_verdicts_at_once_and_age_through_the_sweep(gateway):
    """The listing filters by the stored score: a verdict updates it in its own transaction, and the sweep
    recomputes one grown stale (here forged: 0.99 stored for a provider without evidence)."""
    from gpuproof.gateway import maintenance
    from gpuproof.gateway.models import ProviderScore
    from gpuproof.gateway.trust_cache import TrustCache
    from gpuproof.verifier.trust import score

    gateway.app.state.gp.page_cache = TrustCache(0)  # each listing read now (pages are kept 0.5 s by default)
    agent = Agent(gateway, "honest")
    listed = lambda bound: [p["id"] for p in gateway.client.get(  # noqa: E731
        f"/v1/providers?min_lower_bound={bound}").json()["items"]]
    fresh = score([], 0.0).lower_bound
    assert agent.id in listed(fresh) and agent.id not in listed(fresh + 0.01)
    assert agent.full_round()[1]["outcome"] == "pass"
    lower = gateway.client.get(f"/v1/providers/{agent.id}").json()["trust"]["lower_bound"]
    assert lower > fresh and agent.id in listed(lower - 1e-9)  # the pass moved it, without a sweep
    state = gateway.app.state.gp
    with state.db.writer() as session:
        row = session.get(ProviderScore, agent.id)
        row.lower_bound, row.computed_at = 0.99, 0.0
        session.commit()
    assert agent.id in listed(0.98)
    swept = maintenance.sweep(state, time.time())
    assert swept.scores >= 1 and agent.id not in listed(0.98) and agent.id in listed(lower - 1e-6)


def test_one_identitys_many_verdicts_do_not_queue_anothers(database_url, tmp_path):
    """A fresh identity with 8 devices answers all 8 challenges at once, each costing the
    gateway a full verification (y = B.T x over all of B: the dearest answer it can send); an established
    provider's openings arrive just after. Judged in the request's worker thread (3 of them, first come
    first served), the established provider's verdict waited behind all of the identity's; now verification
    takes turns per identity (gateway/verify_pool.py), so it waits for at most the one being judged."""
    import json
    import threading
    import time

    from gpuproof.client import signed_headers
    from gpuproof.gateway.app import create_app
    from gpuproof.gateway.settings import Settings
    from gpuproof.kernels.reference import CpuBackend
    from gpuproof.kernels.spec import ChallengeParams

    from tests.support import honest
    from tests.support.calibrate import scaled

    # a card slow enough that the test's CPU prover meets its deadline however busy the machine is
    profiles = tmp_path / "profiles.toml"
    profiles.write_text('[profiles.slowcard]\nname = "Slow card"\naliases = ["slowcard"]\nint8_tops = 0.05\n'
                        'memory_gib = 4\nbandwidth_gbs = 10\neff_low = 0.0001\neff_high = 20.0\nmeasured = true\n'
                        'arch = "cpu"\n')
    settings = Settings(data_dir=tmp_path / "d", database_url=database_url, challenge_interval_s=0,
                        profiles_file=profiles, job_challenge_interval_s=0, provider_rate_per_s=1000,
                        ip_rate_per_s=10_000,
                        maintenance_interval_s=0, worker_threads=3, verify_threads=1, verify_threads_new=1,
                        # the identity's challenges: a verification of ~0.1-0.2 s each (B is 2048 x 16384)
                        verify_test_shape="16,256,64,3;slowcard=16,2048,16384,1")
    app = create_app(settings)
    arrived = []  # openings requests that reached the application, in order

    async def counting(scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] == "http" and scope["path"].endswith("/openings"):
            arrived.append(scope["path"])
        await app(scope, receive, send)

    with TestClient(counting) as client:
        gw = type("GW", (), {"client": client, "app": app, "settings": settings})()
        established = Agent(gw, "established")
        assert established.full_round()[1]["outcome"] == "pass"
        sybil = Agent(gw, "fresh", model="slowcard", devices=8)

        def committed(agent: Agent, device: int) -> tuple[str, bytes]:
            c = agent.next(device).json()
            params = ChallengeParams.from_json(c)
            roots = CpuBackend().run(params)
            path = f"/v1/challenges/{c['challenge_id']}/commitment"
            req = agent.post(path, {"roots": [r.hex() for r in roots]})
            assert req.status_code == 200, req.text
            return c["challenge_id"], json.dumps(
                {"openings": honest.openings(params, roots, req.json()["pairs"])}).encode()

        answers = [(sybil, *committed(sybil, d)) for d in range(8)]
        mine = committed(established, 0)
        done: dict[str, float] = {}

        def send(agent: Agent, challenge_id: str, body: bytes) -> None:
            path = f"/v1/challenges/{challenge_id}/openings"
            r = client.post(path, content=body, headers=signed_headers(agent.key, agent.id, "POST", path, body,
                                                                       audience=app.state.gp.audience))
            assert r.status_code == 200, r.text
            done[challenge_id] = time.monotonic()

        threads = [threading.Thread(target=send, args=a) for a in answers]
        for t in threads:
            t.start()
        until = time.monotonic() + scaled(10)
        while len(arrived) < 8 and time.monotonic() < until:  # the identity's eight are in
            time.sleep(0.001)
        last = threading.Thread(target=send, args=(established, *mine))
        last.start()
        for t in [*threads, last]:
            t.join(timeout=scaled(120))
        assert len(done) == 9
        before = sum(done[cid] < done[mine[0]] for _, cid, _ in answers)
        assert before <= 2, f"the established provider's verdict came after {before} of the fresh identity's 8"


def test_uploads_are_held_to_per_provider_and_total_quotas_before_a_byte_is_read(database_url, tmp_path):
    """One provider's held uploads (segments without a verdict yet) and the whole store's are bounded from
    the signed headers alone: over a quota the upload is refused, 507 with the quota named, before a byte
    of its body is read. Before, a provider's uploads had no bound of their own, and the store's quota was
    checked only after the whole body had been streamed to disk."""
    from gpuproof.agent.checkpointing import CheckpointCommitter
    from gpuproof.agent.training import TrainingReporter
    from gpuproof.gateway.app import create_app
    from gpuproof.gateway.settings import Settings
    from gpuproof.verifier import checkpoints
    from gpuproof.verifier.workload import MLPJob

    from tests.gateway.conftest import Gateway
    from tests.gateway.test_training import World

    job = MLPJob(seed=7, hidden=32)
    size = sum(e.nbytes for e in checkpoints.manifest(job.init_state()))  # every checkpoint's state
    settings = Settings(data_dir=tmp_path / "d", database_url=database_url, verify_test_shape="16,256,64,3",
                        provider_rate_per_s=1000, ip_rate_per_s=10_000, maintenance_interval_s=0,
                        upload_quota_bytes_per_provider=size + size // 2, blob_quota_bytes=2 * size + size // 2)
    app = create_app(settings)
    counter = BodyCounter(app)
    with TestClient(counter) as client:
        world = World(Gateway(client, settings, app), tmp_path)

        def trained(name: str, seed: int) -> tuple[GatewayClient, CheckpointCommitter, list[dict]]:
            job = MLPJob(seed=seed, hidden=32)  # other weights: content already held would cost nothing
            provider = world.provider(name)
            reporter = TrainingReporter(provider, world.job(provider))
            committer = CheckpointCommitter(4, store=tmp_path / name, on_commit=reporter.send)
            state = job.init_state()
            committer.start(state)
            for step in range(1, 13):
                state = job.step(state, job.batch_indices(step))
                committer.record(step, job.batch_indices(step), state)
            return provider, committer, reporter.close()["audits"]

        def upload(provider: GatewayClient, committer: CheckpointCommitter, audit: dict):  # noqa: ANN202
            step = audit["start_step"]
            data = checkpoints.state_bytes(committer.load(step), list(committer.commitment(step).manifest))
            assert len(data) == size
            path = f"/v1/audits/{audit['audit_id']}/state"
            return client.put(path, content=data, headers=signed_upload_headers(
                provider.key, provider.provider_id, "PUT", path, data, audience=app.state.gp.audience))

        first, committed, (one, two, *_) = trained("first", 1)
        assert upload(first, committed, one).status_code == 200  # held until its segment's verdict
        read = counter.read
        over = upload(first, committed, two)  # the provider's second would hold 2 x size > 1.5 x size
        assert_problem(over, 507, "GPUPROOF_UPLOAD_QUOTA_BYTES_PER_PROVIDER")
        assert "Retry-After" in over.headers
        assert counter.read == read, "the refused upload's body was read"
        second, theirs, (other, *_) = trained("second", 2)
        assert upload(second, theirs, other).status_code == 200  # 2 x size held: under the store's 2.5 x size
        third, mine, (last, *_) = trained("third", 3)
        read = counter.read
        assert_problem(upload(third, mine, last), 507, "GPUPROOF_BLOB_QUOTA_BYTES")  # 3 x size > 2.5 x size
        assert counter.read == read, "the refused upload's body was read"


def _manifest(tensors: int) -> list[dict]:
    return [{"name": f"layers.{i:05d}.weight", "dtype": "float32", "shape": [4, 4], "nbytes": 64}
            for i in range(tensors)]


def _commitment(step: int, manifest: list[dict]) -> dict:
    h = hashlib.sha256(str(step).encode()).hexdigest()
    return {"step": step, "root": h, "batch_hash": h, "prev_hash": h, "hash": h, "manifest": manifest}


def test_manifests_have_stated_size_limits(database_url, tmp_path):
    """A commitment's manifest is held to GPUPROOF_MAX_MANIFEST_TENSORS and GPUPROOF_MAX_MANIFEST_BYTES, each
    refusal a 422 naming the limit, before anything is stored (before: any manifest of up to 4096 tensors,
    each name up to 512 characters, about 2.3 MB, was stored, twice)."""
    from gpuproof.gateway.app import create_app
    from gpuproof.gateway.settings import Settings

    settings = Settings(data_dir=tmp_path / "d", database_url=database_url, verify_test_shape="16,256,64,3",
                        provider_rate_per_s=1000, ip_rate_per_s=10_000, maintenance_interval_s=0,
                        max_manifest_tensors=64, max_manifest_bytes=4096)
    app = create_app(settings)
    with TestClient(app) as client:
        owner = GatewayClient("http://testserver", key=signatures.new_private_key(), transport=client._transport)
        owner.register("owner", [{"model": "NVIDIA H100", "vram_gib": 80}])
        market = GatewayClient("http://testserver", admin.create_api_key(app.state.gp.db, "market", ["jobs"]),
                               transport=client._transport)
        job_id = market.create_job("renter", owner.provider_id, "usd:1", POLICY).id
        path = f"/v1/jobs/{job_id}/checkpoints"

        def post(manifest: list[dict]):  # noqa: ANN202
            body = json.dumps(_commitment(0, manifest)).encode()
            return client.post(path, content=body, headers=signed_headers(owner.key, owner.provider_id, "POST",
                                                                           path, body, audience=app.state.gp.audience))

        assert_problem(post(_manifest(65)), 422, "GPUPROOF_MAX_MANIFEST_TENSORS")
        long_names = [t | {"name": t["name"] + "x" * 200} for t in _manifest(30)]
        assert_problem(post(long_names), 422, "GPUPROOF_MAX_MANIFEST_BYTES")
        with app.state.gp.db.reader() as reader:
            assert reader.execute(text("select count(*) from training_commitments")).scalar_one() == 0


def test_closing_a_run_of_large_manifests_parses_only_the_drawn_ones(gateway, monkeypatch):
    """200 commitments with 4096-tensor manifests (the review's run: 43.8 s of re-parsing under SQLite's write
    lock, a bystander's poll answered 500 "database is locked"). A close now reads the chain fields and
    arrival times and parses only the q drawn segments' end manifests, outside the write lock."""
    import threading
    import time

    from gpuproof.gateway.models import TrainingCommitment
    from gpuproof.verifier import checkpoints

    owner = GatewayClient("http://testserver", key=signatures.new_private_key(), transport=gateway.client._transport)
    owner.register("owner", [{"model": "NVIDIA H100", "vram_gib": 80}])
    market = GatewayClient("http://testserver", admin.create_api_key(gateway.app.state.gp.db, "market", ["jobs"]),
                           transport=gateway.client._transport)
    job_id = market.create_job("renter", owner.provider_id, "usd:1", POLICY).id
    manifest = _manifest(4096)
    with gateway.app.state.gp.db.writer() as session:  # the run, as 200 accepted posts would have stored it
        for i in range(200):
            c = _commitment(i * POLICY["interval"], manifest)
            session.add(TrainingCommitment(job_id=job_id, step=c["step"], manifest=manifest, received_at=1000.0 + i,
                                           request={}, **{k: bytes.fromhex(c[k]) for k in
                                                          ("root", "batch_hash", "prev_hash", "hash")}))
        session.commit()
    parsed = []
    parse = checkpoints.manifest_from_json

    def counting(items):  # noqa: ANN001, ANN202
        parsed.append(len(items))
        return parse(items)

    monkeypatch.setattr(checkpoints, "manifest_from_json", counting)
    bystander = Agent(gateway, "bystander")
    answers, closing = [], threading.Event()

    def poll() -> None:
        while not closing.is_set():
            started = time.monotonic()
            answers.append((bystander.next().status_code, time.monotonic() - started))

    polling = threading.Thread(target=poll)
    polling.start()
    try:
        started = time.monotonic()
        closed = owner.close_run(job_id)
        took = time.monotonic() - started
    finally:
        closing.set()
        polling.join()
    print(f"close {took:.3f} s; bystander polls {len(answers)}, slowest {max(s for _, s in answers):.3f} s")
    assert len(closed["audits"]) == POLICY["segments"]
    assert len(parsed) <= POLICY["segments"], f"the close parsed {len(parsed)} manifests"
    assert all(status < 500 for status, _ in answers), answers


def test_new_identities_hold_a_bounded_share_of_open_challenges(database_url, tmp_path):
    """Identities are free to make, and each fresh one got a round for all of its (up to 64) devices at its
    first poll: open challenges without limit, each one answered a verification. Identities with no passed
    challenge now hold at most GPUPROOF_NEW_IDENTITY_OPEN_CHALLENGES open challenges together; a round
    beyond it is deferred (204 + Retry-After), and an established provider is never deferred for them."""
    from gpuproof.gateway.app import create_app
    from gpuproof.gateway.settings import Settings

    settings = Settings(data_dir=tmp_path / "d", database_url=database_url, verify_test_shape="16,256,64,3",
                        challenge_interval_s=0, job_challenge_interval_s=0, provider_rate_per_s=1000,
                        ip_rate_per_s=10_000, maintenance_interval_s=0, new_identity_open_challenges=8)
    app = create_app(settings)
    with TestClient(app) as client:
        gw = type("GW", (), {"client": client, "app": app, "settings": settings})()
        established = Agent(gw, "established")
        assert established.full_round()[1]["outcome"] == "pass"
        first = Agent(gw, "fresh", devices=6)
        assert first.next().status_code == 201  # 6 open
        second = Agent(gw, "fresh too", devices=4)
        deferred = second.next()
        assert deferred.status_code == 204 and int(deferred.headers["Retry-After"]) >= 1  # 6 + 4 > 8
        assert established.next().status_code == 201  # not counted, not deferred
        with app.state.gp.db.reader() as reader:
            assert reader.execute(text("select count(*) from challenges where provider_id = :p"),
                                  {"p": second.id}).scalar_one() == 0


def test_the_score_sweep_never_writes_back_a_score_from_before_a_verdict(database_url, tmp_path, monkeypatch):
    """Review of 2026-11-30 (PostgreSQL): the sweep computed a provider's score, then locked its row; a
    failing verdict committed in between was overwritten by the older, passing score, which the listing then
    showed for up to score_refresh_s. The row is locked before the score is computed: the verdict waits for
    the sweep (or the sweep for the verdict), and the stored score is the live one."""
    import threading

    from gpuproof.gateway import maintenance, service
    from gpuproof.gateway.app import create_app
    from gpuproof.gateway.models import ProviderScore
    from gpuproof.gateway.settings import Settings

    if database_url.startswith("sqlite"):
        pytest.skip("SQLite has one writer at a time: the sweep and a verdict cannot interleave there")
    settings = Settings(data_dir=tmp_path / "d", database_url=database_url, verify_test_shape="16,256,64,3",
                        challenge_interval_s=0, provider_rate_per_s=1000, ip_rate_per_s=10000,
                        maintenance_interval_s=0, score_refresh_s=0.5)
    app = create_app(settings)
    with TestClient(app) as client:
        gw = type("GW", (), {"client": client, "app": app, "settings": settings,
                             "audience": app.state.gp.audience})()
        agent = Agent(gw)
        for _ in range(3):
            assert agent.full_round()[1]["outcome"] == "pass"
        state = app.state.gp
        time.sleep(0.6)  # the stored score is due for a refresh
        computed, go = threading.Event(), threading.Event()
        real = service.trust_of

        def paused(session, pid, now):  # noqa: ANN001, ANN202
            t = real(session, pid, now)
            if threading.current_thread().name == "sweep":
                computed.set()
                go.wait(5)  # the sweep holds here, between computing and writing
            return t

        monkeypatch.setattr(service, "trust_of", paused)
        sweep = threading.Thread(target=maintenance._refresh_scores, args=(state, time.time()), name="sweep")
        sweep.start()
        assert computed.wait(30)
        c = agent.next().json()
        params, roots = agent.prove(c)
        req = agent.post(f"/v1/challenges/{c['challenge_id']}/commitment", {"roots": [r.hex() for r in roots]})
        bad = agent.openings(params, roots, req.json()["pairs"])
        bad["openings"][0]["values"][0] += 1
        failing = threading.Thread(target=lambda: agent.post(f"/v1/challenges/{c['challenge_id']}/openings", bad))
        failing.start()
        time.sleep(0.5)
        go.set()
        sweep.join(30)
        failing.join(30)
        monkeypatch.setattr(service, "trust_of", real)
        with state.db.reader() as reader:
            live = real(reader, agent.id, time.time())
            stored = reader.get(ProviderScore, agent.id)
            assert (stored.status, round(stored.lower_bound, 6)) == (live.status, round(live.lower_bound, 6))
    assert live.status == "suspect"


def test_one_challenge_is_verified_once_whatever_bodies_race_for_it(gateway, monkeypatch):
    """Review of 2026-11-30: 8 different openings bodies for one challenge, sent at once, were each verified
    (8 full verifications; at production sizes seconds of CPU each) though only the first could be stored.
    Now a challenge is verified once at a time: the others get 409 at once, before any verification."""
    import copy
    import threading

    from gpuproof.client import signed_headers

    agent = Agent(gateway)
    verifier = gateway.app.state.gp.verifier
    calls: list[int] = []
    real = verifier.judge

    def slow(*args, **kwargs):  # noqa: ANN202 (stands for a large challenge's y = B.T x)
        calls.append(1)
        time.sleep(scaled(0.5))
        return real(*args, **kwargs)

    monkeypatch.setattr(verifier, "judge", slow)
    c = agent.next().json()
    params, roots = agent.prove(c)
    req = agent.post(f"/v1/challenges/{c['challenge_id']}/commitment", {"roots": [r.hex() for r in roots]}).json()
    good = agent.openings(params, roots, req["pairs"])
    path = f"/v1/challenges/{c['challenge_id']}/openings"
    statuses: list[int] = []

    def send(body: bytes) -> None:
        headers = signed_headers(agent.key, agent.id, "POST", path, body, audience=gateway.audience)
        statuses.append(gateway.client.post(path, content=body, headers=headers).status_code)

    bodies = []
    for i in range(8):
        body = copy.deepcopy(good)
        body["openings"][0]["values"][0] += i  # a different body each time
        bodies.append(json.dumps(body).encode())
    threads = [threading.Thread(target=send, args=(b,)) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and sorted(statuses) == [200] + [409] * 7, (len(calls), statuses)


def test_two_uploads_at_once_cannot_both_pass_the_providers_quota(database_url, tmp_path, monkeypatch):
    """Review of 2026-11-30: the per-provider quota was checked before the bodies were read, against uploads
    already recorded, and not again when recording: two uploads checked at once both passed (2 x size held
    against a quota of 1.5 x size). Both are held here until both have passed the first check; the second
    to record is refused 507 and its blob is not kept."""
    import threading

    from gpuproof.agent.checkpointing import CheckpointCommitter
    from gpuproof.agent.training import TrainingReporter
    from gpuproof.gateway.app import create_app
    from gpuproof.gateway.models import SegmentAudit
    from gpuproof.gateway.routers import training as training_routes
    from gpuproof.gateway.settings import Settings
    from gpuproof.verifier import checkpoints
    from gpuproof.verifier.workload import MLPJob
    from sqlalchemy import func, select

    from tests.gateway.conftest import Gateway
    from tests.gateway.test_training import World

    job = MLPJob(seed=7, hidden=32)
    size = sum(e.nbytes for e in checkpoints.manifest(job.init_state()))
    quota = size + size // 2
    settings = Settings(data_dir=tmp_path / "d", database_url=database_url, verify_test_shape="16,256,64,3",
                        provider_rate_per_s=1000, ip_rate_per_s=10_000, maintenance_interval_s=0,
                        upload_quota_bytes_per_provider=quota, blob_quota_bytes=0, blob_quota_objects=0)
    app = create_app(settings)
    both_checked = threading.Barrier(2, timeout=scaled(20))
    real_store = training_routes._store_blob

    def store_after_both(state, path, digest):  # noqa: ANN001, ANN202 (both bodies read: both first checks passed)
        both_checked.wait()
        return real_store(state, path, digest)

    monkeypatch.setattr(training_routes, "_store_blob", store_after_both)
    with TestClient(app) as client:
        world = World(Gateway(client, settings, app), tmp_path)
        provider = world.provider("racer")
        reporter = TrainingReporter(provider, world.job(provider))
        committer = CheckpointCommitter(4, store=tmp_path / "racer", on_commit=reporter.send)
        state = job.init_state()
        committer.start(state)
        for step in range(1, 13):
            state = job.step(state, job.batch_indices(step))
            committer.record(step, job.batch_indices(step), state)
        audits = reporter.close()["audits"][:2]
        assert len(audits) == 2 and audits[0]["start_step"] != audits[1]["start_step"]
        statuses: list[int] = []

        def upload(audit: dict) -> None:
            step = audit["start_step"]
            data = checkpoints.state_bytes(committer.load(step), list(committer.commitment(step).manifest))
            path = f"/v1/audits/{audit['audit_id']}/state"
            headers = signed_upload_headers(provider.key, provider.provider_id, "PUT", path, data,
                                            audience=app.state.gp.audience)
            statuses.append(client.put(path, content=data, headers=headers).status_code)

        threads = [threading.Thread(target=upload, args=(a,)) for a in audits]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with app.state.gp.db.reader() as reader:
            held = reader.execute(select(func.coalesce(func.sum(SegmentAudit.upload_bytes), 0))
                                  .where(SegmentAudit.provider_id == provider.provider_id)).scalar_one()
    assert sorted(statuses) == [200, 507] and held == size <= quota, (statuses, held, quota)


class FromSource:
    """The app as seen from the address a request names in X-Test-Source (TestClient's are all one)."""

    def __init__(self, app) -> None:  # noqa: ANN001
        self.app = app

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] == "http":
            source = dict(scope["headers"]).get(b"x-test-source")
            if source is not None:
                scope = dict(scope, client=(source.decode(), 40000))
        await self.app(scope, receive, send)


def _source_gateway(database_url, tmp_path, **overrides):  # noqa: ANN001, ANN202
    from gpuproof.gateway.app import create_app
    from gpuproof.gateway.settings import Settings

    settings = Settings(**{"data_dir": tmp_path / "d", "database_url": database_url,
                           "verify_test_shape": "16,256,64,3", "challenge_interval_s": 0,
                           "job_challenge_interval_s": 0, "provider_rate_per_s": 1000, "ip_rate_per_s": 10_000,
                           "registrations_per_ip_per_hour": 1000, "maintenance_interval_s": 0} | overrides)
    app = create_app(settings)
    return app, settings


def _agent_from(client, app, settings, name: str, source: str, **kwargs) -> Agent:  # noqa: ANN001
    client.headers["x-test-source"] = source
    gw = type("GW", (), {"client": client, "app": app, "settings": settings})()
    return Agent(gw, name, **kwargs)


def test_one_pass_on_a_cheap_device_does_not_make_new_claims_established(database_url, tmp_path):
    """Review of the new-identity share: "established" was any passed challenge, so a provider passed once on
    one CPU device, then claimed more devices (or another class) and left the share for all of them. A pass
    proves its device at its claim only: the new devices of an established provider count as new (and are
    verified as new ones are, in the pool's share for them)."""
    app, settings = _source_gateway(database_url, tmp_path, new_identity_open_challenges=8,
                                    new_device_open_challenges_per_source=0)
    with TestClient(FromSource(app)) as client:
        veteran = _agent_from(client, app, settings, "veteran", "198.51.100.7")
        assert veteran.full_round()[1]["outcome"] == "pass"
        fresh = _agent_from(client, app, settings, "fresh", "198.51.100.7", devices=6)
        assert fresh.next().status_code == 201  # 6 open from that address, all new
        # the veteran now claims 7 more devices: 7 new ones, 6 + 7 > 8 new open challenges
        claims = [{"model": "cpu-reference", "vram_gib": 8}] * 8
        body = json.dumps({"name": "veteran", "devices": claims}).encode()
        path = f"/v1/providers/{veteran.id}"
        client.headers["x-test-source"] = "198.51.100.7"
        r = client.put(path, content=body, headers=signed_headers(veteran.key, veteran.id, "PUT", path, body,
                                                                  audience=veteran.audience)
                       | {"content-type": "application/json"})
        assert r.status_code == 200, r.text
        deferred = veteran.next()
        assert deferred.status_code == 204 and int(deferred.headers["Retry-After"]) >= 1, deferred.text
        with app.state.gp.db.reader() as reader:
            assert reader.execute(text("select count(*) from challenges where provider_id = :p"),
                                  {"p": veteran.id}).scalar_one() == 1  # the one it passed, no new round


def test_identities_from_one_source_cannot_lock_a_newcomer_elsewhere_out(database_url, tmp_path):
    """Review of the new-identity share: four fresh identities of 64 devices each filled the gateway-wide
    share (256) and every newcomer's first round was deferred for as long as they kept it full. Now the
    providers of one source share GPUPROOF_NEW_DEVICE_OPEN_CHALLENGES_PER_SOURCE, and a source holding none
    may start one round beyond the gateway-wide share, up to twice it."""
    app, settings = _source_gateway(database_url, tmp_path, new_identity_open_challenges=12,
                                    new_device_open_challenges_per_source=8)
    with TestClient(FromSource(app)) as client:
        first = _agent_from(client, app, settings, "flood 1", "192.0.2.10", devices=8)
        assert first.next().status_code == 201  # 8 held from 192.0.2.10: its share
        second = _agent_from(client, app, settings, "flood 2", "192.0.2.10", devices=4)
        assert second.next().status_code == 204  # same source: 8 + 4 > 8
        third = _agent_from(client, app, settings, "flood 3", "192.0.2.11", devices=8)
        assert third.next().status_code == 201  # another source holding none: one round (16 held in all)
        newcomer = _agent_from(client, app, settings, "newcomer", "203.0.113.5", devices=2)
        assert newcomer.next().status_code == 201  # 16 + 2 > 12 gateway-wide, but its source holds none
        again = _agent_from(client, app, settings, "newcomer 2", "203.0.113.5", devices=1)
        assert again.next().status_code == 204  # its source holds 2 now, and the gateway's share is full
        v6 = _agent_from(client, app, settings, "v6 a", "2001:db8:1:2::1", devices=4)
        assert v6.next().status_code == 201  # 22 held in all
        same_64 = _agent_from(client, app, settings, "v6 b", "2001:db8:1:2:ffff::9", devices=1)
        assert same_64.next().status_code == 204  # one /64 is one source
        # a first round still has a hard bound: twice the gateway-wide share (22 + 3 > 24)
        bounded = _agent_from(client, app, settings, "one more place", "198.51.100.200", devices=3)
        assert bounded.next().status_code == 204


def test_an_ipv6_client_cannot_rotate_through_its_64_to_escape_the_read_limit(database_url, tmp_path):
    """Review: the per-address buckets keyed the full IPv6 address, so a client with a /64 (most have one)
    rotated addresses and was never limited. Now a /64 is one address for the limits."""
    app, settings = _source_gateway(database_url, tmp_path, ip_rate_per_s=1)
    with TestClient(FromSource(app)) as client:
        codes = [client.get("/v1/providers", headers={"x-test-source": f"2001:db8:7:7::{i + 1:x}"}).status_code
                 for i in range(4)]
        assert codes[:2] == [200, 200] and 429 in codes[2:], codes  # a burst of two for the whole /64
        other = client.get("/v1/providers", headers={"x-test-source": "2001:db8:7:8::1"})
        assert other.status_code == 200  # another /64 has its own bucket
