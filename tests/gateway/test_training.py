"""Training proofs through the gateway (SQLite and PostgreSQL): commitments timestamped and chained,
segments drawn after the run, uploads checked and stored by content, signed replays, verdicts into the
score, the settlement and the log. Every cheat of simulators.training.CHEATS must be caught here."""

from __future__ import annotations

import functools
import hashlib
import json

import pytest
from gpuproof.agent.checkpointing import CheckpointCommitter
from gpuproof.agent.training import TrainingReporter, replay_job, run_reference_job
from gpuproof.client import GatewayClient, GatewayError
from gpuproof.gateway import admin
from gpuproof.gateway.models import SegmentAudit, TrainingCommitment
from gpuproof.simulators.training import CHEATS, cheating_run
from gpuproof.verifier import checkpoints, signatures
from gpuproof.verifier.workload import MLPJob
from sqlalchemy import func, select

from tests.support.calibrate import scaled
from tests.support.training import commit_and_close

POLICY = {"interval": 4, "segments": 2, "chunks": 6, "mode": "exact",
          "workload": {"name": "mlp", "params": {"seed": 7, "hidden": 32}}}
# Timing checks need a step time well above a commitment's round trip (as real steps are). On the reference
# machine: a 0.1 s step floor (too-fast compares arrivals against half of it), a 0.12 s stand-in step and
# 0.3 s of arrival slack, so an honest run is clear of the floor by 0.07 s a step plus the slack, and a burst
# of all 7 commitments at the end is flagged when it takes under 24 * 0.05 - 0.3 = 0.9 s. All three are
# scaled to this machine (tests/support/calibrate.py): a busy one delays honest commitments and stretches
# the cheat's burst alike, and both margins grow with it.
TIMED = POLICY | {"min_step_s": scaled(0.1), "arrival_slack_s": scaled(0.3)}
STEPS = 24
DELAY = scaled(0.12)


class World:
    def __init__(self, gateway, tmp_path):
        self.gw, self.tmp = gateway, tmp_path
        db = gateway.app.state.gp.db
        transport = gateway.client._transport
        self.market = GatewayClient("http://testserver", admin.create_api_key(db, "market", ["jobs", "settle"]),
                                    transport=transport)
        self.validator = GatewayClient("http://testserver", admin.create_api_key(db, "validator", ["replay"]),
                                       transport=transport)
        self.validator_key = signatures.new_private_key()  # registered by the market: its jobs name it
        self.market.register_validator(signatures.public_key_bytes(self.validator_key).hex(), "validator")
        self.transport = transport

    def provider(self, name="trainer"):
        key = signatures.new_private_key()
        client = GatewayClient("http://testserver", key=key, transport=self.transport)
        client.register(name, [{"model": "NVIDIA H100", "vram_gib": 80}])
        return client

    def job(self, provider, policy=POLICY):
        return self.market.create_job("renter", provider.provider_id, "usd:1", policy).id

    def run(self, cheat=None, policy=POLICY, steps=STEPS, delay=0.0):
        provider = self.provider()
        jid = self.job(provider, policy)
        report = run_reference_job(provider, jid, policy, self.tmp / f"store-{jid}", steps, delay,
                                   cheating_run(cheat) if cheat else None)
        replay_job(self.validator, jid, self.validator_key)
        return provider, jid, report, self.market.training(jid)


@pytest.fixture
def world(gateway, tmp_path):
    return World(gateway, tmp_path)


def failed(report):
    return report["flags"] or any(a["outcome"] == "fail" for a in report["audits"])


def test_an_honest_run_passes_everywhere_and_is_on_the_record(world):
    provider, jid, before, after = world.run(policy=TIMED, delay=DELAY)
    assert before["state"] == "closed" and before["flags"] == []
    assert all(a["state"] == "ready" for a in before["audits"]), before
    assert len(after["audits"]) == 2 and all(a["outcome"] == "pass" for a in after["audits"]), after
    assert all(a["verdict"]["judged_by"].startswith("validator") for a in after["audits"])
    assert [c["step"] for c in after["commitments"]] == list(range(0, STEPS + 1, 4))
    times = [c["received_at"] for c in after["commitments"]]
    assert times == sorted(times) and times[-1] - times[0] >= STEPS * DELAY * 0.9  # spread over the run
    # the uploads are deleted once judged (content-addressed, kept only until the verdict)
    assert not any(p.is_file() for p in (world.gw.settings.data_dir / "uploads").rglob("*"))
    kinds = [e.kind for e in world.market.log_entries().entries]
    assert kinds.count("checkpoint") == STEPS // 4 + 1 and kinds.count("training-close") == 1
    assert kinds.count("training-verdict") == 2
    trust = world.market.trust(provider.provider_id)
    assert trust.evidence == 2 and any("training replay passed" in r for r in trust.reasons)
    # settlement: no hardware challenge passed yet, so hold, but not for the training evidence
    decision = world.market.settle(jid)
    assert decision.decision == "hold" and not any("training" in r for r in decision.reasons or []), decision


@pytest.mark.parametrize("cheat", sorted(CHEATS))
def test_every_cheat_is_caught_and_refunded(world, cheat):
    timed = cheat == "at-end"
    provider, jid, _, after = world.run(cheat, TIMED if timed else POLICY, delay=DELAY if timed else 0.0)
    assert failed(after), (cheat, after)
    if not timed:  # caught by the evidence itself, not by a timing flag
        # (this run has no step time: it lasts ~0.1 s, so a busy machine that delays its sender can make its
        # commitments look sent at the end; at-end judges that delivery, not this cheat)
        assert [f for f in after["flags"] if not f.startswith("at-end")] == [], after["flags"]
        assert any(a["outcome"] == "fail" for a in after["audits"]), after
    decision = world.market.settle(jid)
    assert decision.decision == "refund" and decision.final, decision
    assert any("training" in r for r in decision.reasons or [])
    trust = world.market.trust(provider.provider_id)
    assert trust.status == "suspect" and trust.score < 0.2, trust
    if cheat == "at-end":
        assert any(f.startswith("too-fast") for f in after["flags"]), after["flags"]
    if cheat == "bad-openings":
        verdict = next(a["verdict"] for a in after["audits"] if a["outcome"] == "fail")
        assert verdict["tensor"] and verdict["chunk"] is not None and "not in the root" in verdict["reason"]
    if cheat == "other-job":
        assert all(a["outcome"] == "fail" for a in after["audits"])


def test_the_chain_is_enforced_and_retries_are_idempotent(world):
    provider = world.provider()
    jid = world.job(provider)
    job = MLPJob(seed=7, hidden=32)
    sent = []
    committer = CheckpointCommitter(4, on_commit=sent.append)
    state = job.init_state()
    committer.start(state)
    first = provider.post_checkpoint(jid, sent[0].to_json())
    assert provider.post_checkpoint(jid, sent[0].to_json()) == first  # a retry: same answer, stored once
    for step in range(1, 9):
        state = job.step(state, job.batch_indices(step))
        committer.record(step, job.batch_indices(step), state)
    with pytest.raises(GatewayError, match="expected step 4"):
        provider.post_checkpoint(jid, sent[2].to_json())  # step 8 before step 4
    forged = sent[1].to_json() | {"root": "11" * 32}
    with pytest.raises(GatewayError, match="does not match SHA-256"):
        provider.post_checkpoint(jid, forged)
    relinked = sent[1].to_json() | {"prev_hash": "22" * 32}
    relinked["hash"] = checkpoints.chain_hash(4, sent[1].root, sent[1].batch_hash, bytes.fromhex("22" * 32)).hex()
    with pytest.raises(GatewayError, match="does not chain"):
        provider.post_checkpoint(jid, relinked)
    provider.post_checkpoint(jid, sent[1].to_json())
    with pytest.raises(GatewayError, match="another commitment"):
        provider.post_checkpoint(jid, relinked | {"step": 4})
    other = world.provider("someone else")
    with pytest.raises(GatewayError, match="another provider") as info:
        other.post_checkpoint(jid, sent[2].to_json())
    assert info.value.status == 403
    db = world.gw.app.state.gp.db
    with db.reader() as s:
        assert s.scalar(select(func.count()).select_from(TrainingCommitment)) == 2
        stored = s.get(TrainingCommitment, (jid, 4))
        # the signed request is kept: anyone can re-check that this provider committed this
        req = stored.request
        assert req["version"] == "2" and req["audience"] == world.gw.app.state.gp.audience
        message = signatures.request_message(req["method"], req["path"], req["audience"], req["timestamp"],
                                             req["nonce"], req["body"].encode())
        signatures.verify(bytes.fromhex(provider.provider(provider.provider_id).public_key), message,
                          bytes.fromhex(req["signature"]))
        assert json.loads(req["body"])["hash"] == sent[1].hash.hex()
        # the body is stored once (issue 18): its manifest is read from it, not kept a second time
        assert stored.manifest is None and json.loads(req["body"])["manifest"] == sent[1].to_json()["manifest"]


def test_uploads_are_checked_on_arrival_and_limited_in_size(world, tmp_path):
    provider = world.provider()
    jid = world.job(provider)
    job = MLPJob(seed=7, hidden=32)
    reporter = TrainingReporter(provider, jid)
    committer = CheckpointCommitter(4, store=tmp_path / "s", on_commit=reporter.send)
    state = job.init_state()
    committer.start(state)
    for step in range(1, 13):
        state = job.step(state, job.batch_indices(step))
        committer.record(step, job.batch_indices(step), state)
    report = reporter.close()
    assert reporter.close() == report  # closing twice changes nothing
    with pytest.raises(GatewayError, match="closed"):
        provider.post_checkpoint(jid, committer.commitments[-1].to_json() | {"step": 16})
    audit = report["audits"][0]
    manifest = list(committer.commitment(audit["start_step"]).manifest)
    good = checkpoints.state_bytes(committer.load(audit["start_step"]), manifest)
    with pytest.raises(GatewayError, match="limited") as info:
        provider.upload_state(audit["audit_id"], good + bytes(world.gw.settings.max_upload_bytes))
    assert info.value.status == 413
    with pytest.raises(GatewayError) as info:
        world.validator.replay_state(audit["audit_id"], world.validator_key)
    assert info.value.status == 409  # nothing to replay yet
    bad = bytearray(good)
    bad[100] ^= 1
    judged = provider.upload_state(audit["audit_id"], bytes(bad))
    assert judged["outcome"] == "fail" and "does not match the root" in judged["verdict"]["reason"]
    with pytest.raises(GatewayError, match="judged"):
        provider.upload_state(audit["audit_id"], good)  # too late: the failure stands
    second = report["audits"][1]
    manifest = list(committer.commitment(second["start_step"]).manifest)
    data = checkpoints.state_bytes(committer.load(second["start_step"]), manifest)
    stored = provider.upload_state(second["audit_id"], data)
    assert stored["uploaded"] and stored["state"] == "requested"
    import hashlib

    digest = hashlib.sha256(data).hexdigest()
    assert (world.gw.settings.data_dir / "uploads" / digest[:2] / digest).read_bytes() == data
    with pytest.raises(GatewayError) as info:  # scope: a marketplace key without `replay` cannot read weights
        world.market.replay_materials(second["audit_id"])
    assert info.value.status == 403


def test_a_replay_result_must_be_signed_over_the_audits_evidence(world):
    provider = world.provider()
    jid = world.job(provider)
    run_reference_job(provider, jid, POLICY, world.tmp / "store", 8, DELAY)
    audit = world.market.training(jid)["audits"][0]
    body = {"outcome": "pass", "mode": "exact", "reason": "trust me", "validator_key":
            signatures.public_key_bytes(world.validator_key).hex(), "signature": "00" * 64}
    with pytest.raises(GatewayError, match="signature") as info:
        world.validator.post_replay_result(audit["audit_id"], body)
    assert info.value.status == 401
    # signed, but over other evidence (another end root): refused the same way
    from gpuproof.verifier import training

    fields = training.replay_fields(audit["audit_id"], jid, audit["start_step"], audit["end_step"], "00" * 32,
                                    "00" * 32, "00" * 32, None, body)
    body["signature"] = signatures.sign(world.validator_key, signatures.replay_message(fields)).hex()
    with pytest.raises(GatewayError, match="signature"):
        world.validator.post_replay_result(audit["audit_id"], body)
    assert world.market.training(jid)["audits"][0]["state"] == "ready"


def closed_run_past_its_audit_deadline(world):
    """A provider that commits a run, closes it and then sends nothing: its audits' deadline has passed."""
    policy = POLICY | {"audit_deadline_s": 1}
    provider = world.provider()
    jid = world.job(provider, policy)
    commit_and_close(provider, jid)
    db = world.gw.app.state.gp.db
    with db.writer() as s:  # let the deadline pass without sleeping
        for a in s.execute(select(SegmentAudit).where(SegmentAudit.job_id == jid)).scalars():
            a.deadline_at -= 5
        s.commit()
    return provider, jid


def test_audits_not_answered_in_time_fail(world, tmp_path):
    provider, jid = closed_run_past_its_audit_deadline(world)
    late = world.market.training(jid)["audits"][0]
    with pytest.raises(GatewayError, match="judged") as info:  # too late: refused, and the expiry stands
        provider.upload_state(late["audit_id"], b"\x00" * 64)
    assert info.value.status == 409
    assert world.market.training(jid)["audits"][0]["outcome"] == "fail"
    decision = world.market.settle(jid)
    assert decision.decision == "refund" and any("did not arrive before the deadline" in r
                                                 for r in decision.reasons or []), decision


def test_the_sweep_fails_unanswered_audits_without_a_poll_or_a_settlement(world):
    import time

    from gpuproof.gateway import maintenance

    provider, jid = closed_run_past_its_audit_deadline(world)
    before = world.market.trust(provider.provider_id).evidence
    swept = maintenance.sweep(world.gw.app.state.gp, time.time())
    assert swept.audits == 2
    audits = world.market.training(jid)["audits"]
    assert [a["outcome"] for a in audits] == ["fail", "fail"]
    assert all("did not arrive before the deadline" in a["verdict"]["reason"] for a in audits)
    assert world.market.trust(provider.provider_id).evidence == before + 2
    assert maintenance.sweep(world.gw.app.state.gp, time.time()).audits == 0  # judged once


def test_bad_policies_and_manifests_are_422(world):
    provider = world.provider()
    for policy, fragment in [({"interval": 0}, "interval"), ({"mode": "fuzzy"}, "mode"), ({"bogus": 1}, "unknown"),
                             ({"segments": 10**6}, "segments")]:
        with pytest.raises(GatewayError, match=fragment) as info:
            world.job(provider, policy)
        assert info.value.status == 422
    jid = world.job(provider)
    c = CheckpointCommitter(4)
    first = c.start(MLPJob(seed=7, hidden=32).init_state()).to_json()
    for manifest, fragment in [([{"name": "b", "dtype": "<f4", "shape": [2], "nbytes": 8},
                                 {"name": "a", "dtype": "<f4", "shape": [2], "nbytes": 8}], "sorted"),
                               ([{"name": "a", "dtype": "<f4", "shape": [3], "nbytes": 8}], "do not fit")]:
        with pytest.raises(GatewayError, match=fragment) as info:
            provider.post_checkpoint(jid, first | {"manifest": manifest})
        assert info.value.status == 422
    hardware_only = world.market.create_job("renter", provider.provider_id, "usd:1").id
    with pytest.raises(GatewayError, match="without a checkpoint_policy") as info:
        provider.post_checkpoint(hardware_only, first)
    assert info.value.status == 409


def test_two_hundred_honest_runs_never_fail(tmp_path):
    """200 honest runs through the functions the gateway and the validator judge with (chain checks, the
    timing flags, the CSPRNG draw, the upload's root, the openings, the signed replay's verdict), without
    HTTP in between; bench/training_attacks.py runs 200 through the gateway itself (docs/threat-model.md)."""
    from gpuproof.verifier import training
    from gpuproof.verifier.replay import replay_audit, step_with_threads

    policy = training.TrainingPolicy.parse(POLICY)
    job = MLPJob(seed=7, hidden=32)
    data = job.data()
    step_factory = functools.partial(step_with_threads, job)
    for n in range(200):
        committer = CheckpointCommitter(4, store=tmp_path / f"s{n}")
        state = job.init_state()
        committer.start(state)
        for step in range(1, 9):
            state = job.step(state, job.batch_indices(step), data)
            committer.record(step, job.batch_indices(step), state)
        received = [training.Received(c.step, c.root, c.batch_hash, c.prev_hash, c.hash, c.manifest, 0.05 * j)
                    for j, c in enumerate(committer.commitments)]  # arrival times of a steady run
        for prev, new in zip([None, *received], received, strict=False):
            training.check_next(prev, new, policy)
        assert training.timing_flags(received, 0.01) == []
        for draw in training.draw_audits(received, policy):
            start, end = committer.commitment(draw.start_step), committer.commitment(draw.end_step)
            upload = committer.state_bytes(draw.start_step)
            assert checkpoints.root_of_buffer(upload, list(start.manifest)) == start.root
            opened = [training.OpenedChunk(nm, i, c, tuple(p)) for nm, i, c, p in
                      checkpoints.open_chunks(committer.load(draw.end_step), list(end.manifest), draw.chunks)]
            batches = [b.tolist() for b in committer.batches(draw.end_step)]
            training.check_openings(next(r for r in received if r.step == draw.end_step), draw.chunks, batches,
                                    opened, draw.end_step - draw.start_step)
            materials = {"policy": POLICY, "upload_sha256": hashlib.sha256(upload).hexdigest(),
                         "start": start.to_json(), "end": end.to_json(), "batches": batches,
                         "openings": [{"name": o.name, "index": o.index, "chunk": o.chunk.hex(),
                                       "path": [h.hex() for h in o.path]} for o in opened]}
            result = replay_audit(materials, upload, step_factory)
            assert result["outcome"] == "pass", (n, result)


def test_tolerance_mode_calibrates_tau_passes_honest_and_catches_a_fake(world):
    policy = POLICY | {"mode": "tolerance"}
    _, _, _, honest = world.run(policy=policy)
    assert all(a["outcome"] == "pass" for a in honest["audits"]), honest
    verdict = honest["audits"][0]["verdict"]
    assert verdict["tau"] >= 1e-4 and verdict["distance"] <= verdict["tau"] and "within tau" in verdict["reason"]
    _, jid, _, cheat = world.run("interpolate", policy=policy)
    failed_audits = [a["verdict"] for a in cheat["audits"] if a["outcome"] == "fail"]
    assert failed_audits and failed_audits[0]["tensor"] and failed_audits[0]["distance"] > failed_audits[0]["tau"]
    assert world.market.settle(jid).decision == "refund"


def test_the_provider_reads_its_report_through_a_dropped_connection(world):
    """The run's last call (the report) is retried like every other: a replica killed at that moment (as in
    tests/reliability/test_replicas.py) cost a whole run once, though everything before it had been kept."""
    import httpx

    class DropsFirstReportRead(httpx.BaseTransport):
        def __init__(self, inner):
            self.inner, self.dropped = inner, 0

        def handle_request(self, request):
            if request.method == "GET" and request.url.path.endswith("/training") and not self.dropped:
                self.dropped += 1
                raise httpx.ReadError("connection reset by peer", request=request)
            return self.inner.handle_request(request)

    provider = world.provider()
    jid = world.job(provider)
    flaky = DropsFirstReportRead(world.transport)
    dropping = GatewayClient("http://testserver", key=provider.key, transport=flaky)
    dropping.provider_id = provider.provider_id
    report = run_reference_job(dropping, jid, POLICY, world.tmp / "store", 8)
    assert flaky.dropped == 1 and report["job_id"] == jid and report["audits"], report
