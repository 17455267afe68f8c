"""Issue 18, "cheap to send, dear to serve": a request that costs its sender nothing costs the gateway
little too. Each test reproduces one finding and failed on the code before its fix."""

from __future__ import annotations

import hashlib
import secrets
import time

from fastapi.testclient import TestClient
from gpuproof.client import GatewayClient, signed_headers, signed_upload_headers
from gpuproof.gateway import admin
from gpuproof.verifier import signatures
from sqlalchemy import text

from tests.gateway.test_api import Agent, assert_problem
from tests.gateway.test_training import POLICY
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

    settings = Settings(data_dir=tmp_path / "d", database_url=database_url, registrations_per_ip_per_hour=10_000,
                        registrations_per_s_global=10_000, ip_rate_per_s=10_000, maintenance_interval_s=0)
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
        """Statements of the page's second read (the first may open a pooled connection: its set-up runs)."""
        counts = []
        for _ in range(2):
            statements.clear()
            assert client.get(path).status_code == 200, path
            counts.append(len(statements))
        return counts[-1]

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
    from gpuproof.verifier.trust import score

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
