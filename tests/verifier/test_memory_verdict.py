"""Spec v2's memory phase in the verifier's flow (issue 17 part 3): the nonce with the opening request, the
walk timed from it, lanes drawn after the walk root, the finding in the verdict; the lifecycle's walk step;
trust and settlement's use of the finding. Fake clocks, no HTTP."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from gpuproof.kernels.backend import Opening
from gpuproof.kernels.memory import LaneOpening, prover_for, walk_key
from gpuproof.kernels.reference import CpuBackend
from gpuproof.verifier import hardware, lifecycle, transcript
from gpuproof.verifier import memory as vm
from gpuproof.verifier.outcome import Correctness, Outcome, Timing
from gpuproof.verifier.protocol import Verifier
from gpuproof.verifier.trust import VerdictRecord, score

SHAPE = (16, 256, 64, 3)


def _play(v: Verifier, model: str = "h200", walk_late_by: float = 0.0, tamper=None, table=None,  # noqa: ANN001
          transcript_out: list | None = None):
    """Issue, prove, commit, walk, open and judge one challenge on a fake clock: the compute phase and the
    walk each take their expected time (plus `walk_late_by` for the walk); its transcript appended to
    `transcript_out`."""
    c = v.issue(model, now=1000.0, shape=SHAPE)
    roots = CpuBackend().run(c.params)
    commitment = v.commit(c, roots, received_at=c.issued_at + c.thresholds.expected_s)
    request = v.request_openings(c, commitment)
    openings = [Opening(r, i, *CpuBackend().open(c.params, r, i, roots)) for r, i in sorted(set(request.pairs))]
    openings = [Opening(o.round, o.row, o.values, tuple(o.path)) for o in openings]
    if c.memory is None:
        return c, v.judge(c, commitment, request, openings)
    prover = prover_for(CpuBackend(), c.memory, roots) if table is None else table(c.memory, roots)
    wk = walk_key(c.params.seed, roots[-1], request.nonce)
    walk_root = prover.run_walk(wk)
    limits = vm.walk_thresholds(c.memory, v.profile_of(c), v.memory_config)
    sent = commitment.received_at + 0.01
    walk = v.commit_walk(c, walk_root, nonce_sent_at=sent, received_at=sent + limits.expected_s + walk_late_by)
    lanes = v.draw_lanes(c)
    lane_openings = [prover.open(lane, wk) for lane in lanes.lanes]
    if tamper is not None:
        lane_openings = tamper(lane_openings)
    verdict = v.judge(c, commitment, request, openings, walk, lanes, lane_openings)
    if transcript_out is not None:
        transcript_out.append(transcript.build(c, commitment, request, openings, verdict, walk, lanes, lane_openings))
    return c, verdict


def test_an_honest_v2_challenge_on_a_profiled_card_passes_with_its_memory_finding():
    c, verdict = _play(Verifier())
    assert c.memory is not None and c.public()["memory"]["lanes"] == c.memory.lanes
    assert verdict.outcome == Outcome.PASS, verdict.reasons
    finding = verdict.memory
    assert finding is not None and finding.passed and finding.capacity == "holds-table"
    assert finding.walk_class == "consistent"
    doc = verdict.to_json()["memory"]
    assert {"walk_gbs", "slow_limit_gbs", "capacity_pass_probability", "bandwidth_class",
            "bandwidth_pass_probability"} <= set(doc)
    assert any(r.startswith("memory phase passed") for r in verdict.reasons)


def test_v1_and_cpu_challenges_have_no_memory_phase():
    assert Verifier().issue("h200", now=0.0, shape=SHAPE, spec="gpuproof/1").memory is None
    _, verdict = _play(Verifier(), model="cpu-reference")
    assert verdict.memory is None and "memory" not in verdict.to_json()
    assert Verifier().issue("some unknown card", now=0.0, shape=SHAPE).memory is None


def test_a_full_size_v2_challenge_has_rounds_enough_for_its_table():
    c = Verifier().issue("h200-nvl", now=0.0)
    assert c.memory is not None and c.params.rounds >= vm.table_rounds_needed(c.params, Verifier().profiles["h200-nvl"])


def test_late_walk_commitment_fails_the_verdict():
    v = Verifier()
    c = v.issue("h200", now=0.0, shape=SHAPE)
    limits = vm.walk_thresholds(c.memory, v.profile_of(c), v.memory_config)
    _, verdict = _play(v, walk_late_by=limits.slow_s * 2)
    assert verdict.outcome == Outcome.FAIL and verdict.correctness == Correctness.PASS
    assert verdict.memory.walk_class in ("slower-than-claimed", "timeout") and verdict.memory.capacity == "not-shown"
    assert any(r.startswith("memory phase FAILED") for r in verdict.reasons)


def test_walk_openings_that_do_not_match_the_committed_roots_fail_correctness():
    def flip(lanes: list[LaneOpening]) -> list[LaneOpening]:
        first = lanes[0]
        leaf = bytearray(first.leaves[3])
        leaf[0] ^= 1
        bad = dataclasses.replace(first, leaves=(*first.leaves[:3], bytes(leaf), *first.leaves[4:]))
        return [bad, *lanes[1:]]

    _, verdict = _play(Verifier(), tamper=flip)
    assert verdict.outcome == Outcome.FAIL and verdict.correctness == Correctness.FAIL
    assert verdict.failure.reason == "memory:bad-leaf-path" and verdict.memory.capacity == "failed"


def test_a_cheater_keeping_half_the_table_fails_its_memory_finding():
    """A prover that keeps half the table and answers missed leaves from a made-up table (recomputing them
    would not fit the walk's limit, below): its lanes do not check."""
    def half(plan, roots):  # noqa: ANN001, ANN202
        prover = prover_for(CpuBackend(), plan, roots)
        prover.table[plan.table_leaves // 2:] = 0  # the half it does not keep
        return prover

    _, verdict = _play(Verifier(), table=half)
    assert verdict.outcome == Outcome.FAIL and verdict.correctness == Correctness.FAIL
    assert verdict.failure.reason in ("memory:bad-leaf-path", "memory:wrong-state")


@pytest.mark.parametrize("card", ["h100-sxm", "h100-nvl"])
def test_a_smaller_card_recomputing_what_it_cannot_hold_is_too_slow_for_an_h200(card):
    """At an H200's full size a card with less memory walks, at best (the cheat model: keeping what fits,
    compressing, spilling to the host, recomputing the rest), slower than the slow limit: the finding fails."""
    v = Verifier()
    c = v.issue("h200", now=0.0)
    cheat = vm.best_cheat(c.memory, v.profiles[card])
    finding = vm.memory_finding(c.memory, v.profile_of(c), None, cheat.seconds, v.memory_config, v.profiles)
    assert not finding.passed and finding.capacity == "not-shown"
    assert finding.capacity_pass_probability < 1e-3


def test_the_walk_step_of_the_lifecycle():
    ch = lifecycle.ChallengeState("ab" * 16, "issued", issued_at=0.0, deadline_s=10.0, memory=True)
    with pytest.raises(lifecycle.NotCommitted):
        lifecycle.commit_walk(ch, "w", 1.0)
    ch = lifecycle.commit(ch, "roots", 1.0).state
    ch = lifecycle.draw(ch)
    with pytest.raises(lifecycle.NotCommitted):  # openings wait for the walk
        lifecycle.openings(ch, "o", 2.0)
    step = lifecycle.commit_walk(ch, "w", 2.0)
    assert step.action == "store"
    ch = lifecycle.draw_lanes(step.state)
    assert lifecycle.draw_lanes(ch) is None
    assert lifecycle.commit_walk(ch, "w", 3.0).action == "replay"
    with pytest.raises(lifecycle.AlreadyCommitted):
        lifecycle.commit_walk(ch, "other", 3.0)
    assert lifecycle.openings(ch, "o", 3.0) == "judge"
    late = lifecycle.draw(lifecycle.commit(lifecycle.ChallengeState("cd" * 16, "issued", issued_at=0.0,
                                                                    deadline_s=10.0, memory=True), "r", 1.0).state)
    with pytest.raises(lifecycle.DeadlinePassed):
        lifecycle.commit_walk(late, "w", 11.0)
    plain = lifecycle.draw(lifecycle.commit(lifecycle.ChallengeState("ef" * 16, "issued", issued_at=0.0,
                                                                     deadline_s=10.0), "r", 1.0).state)
    with pytest.raises(lifecycle.NotCommitted):  # no memory phase: no walk
        lifecycle.commit_walk(plain, "w", 2.0)


def _record(memory: str | None, timing: str = Timing.CONSISTENT) -> VerdictRecord:
    return VerdictRecord("ab" * 16, at=100.0, correctness=Correctness.PASS, timing=timing, best_match="h200",
                         claimed_profile="h200", memory=memory)


def test_trust_and_settlement_need_the_memory_finding_to_pass():
    profiles = Verifier().profiles
    assert hardware.verified_class(_record("pass"), profiles).key == "h200"
    assert hardware.verified_class(_record("fail"), profiles) is None
    assert hardware.verified_class(_record("missing"), profiles) is None
    assert hardware.verified_class(_record(None), profiles).key == "h200"  # v1: as before
    assert not _record("fail").passed and _record("missing").passed
    assert score([_record("fail")], now=100.0).verified_class is None
    assert score([_record("missing")], now=100.0).verified_class is None
    assert score([_record("pass")], now=100.0).verified_class == "h200"
    evidence = hardware.DeviceEvidence(0, "h200", (_record("fail"),))
    found = hardware.judge_devices([evidence], "h200", profiles)
    assert found.refund and "memory phase" in found.refund[0]
    found = hardware.judge_devices([hardware.DeviceEvidence(0, "h200", (_record("missing"),))], "h200", profiles)
    assert found.hold and "without a memory finding" in found.hold[0]
    assert hardware.judge_devices([hardware.DeviceEvidence(0, "h200", (_record("pass"),))], "h200",
                                  profiles).proven


def test_memory_status_of_stored_verdicts():
    profiles = Verifier().profiles
    assert vm.memory_status("gpuproof/1", profiles["h200"], {}) is None
    assert vm.memory_status("gpuproof/2", profiles["cpu-reference"], {}) is None
    assert vm.memory_status("gpuproof/2", profiles["h200"], {}) == "missing"
    assert vm.memory_status("gpuproof/2", profiles["h200"], {"memory": {"passed": True}}) == "pass"
    assert vm.memory_status("gpuproof/2", profiles["h200"], {"memory": {"passed": False}}) == "fail"


def test_a_memory_phase_transcript_rechecks_and_a_changed_walk_time_is_caught():
    docs: list = []
    _, verdict = _play(Verifier(), transcript_out=docs)
    doc = json.loads(transcript.encode(docs[0]))
    assert doc["memory"]["walk"]["walk_s"] == verdict.memory.walk_s and len(doc["memory"]["lane_openings"]) == 64
    again, diffs = transcript.recheck(doc)
    assert diffs == [] and again.memory is not None and again.memory.passed
    doc["memory"]["walk"]["walk_s"] += 5.0
    doc["memory"]["walk"]["received_at"] += 5.0
    _, diffs = transcript.recheck(doc)
    assert any(d.startswith("verdict.memory.walk_s") for d in diffs)
    assert any(d.startswith("verdict.outcome") for d in diffs)


def test_a_memory_challenge_whose_rows_fail_costs_the_verifier_no_lane_rewalk(monkeypatch):
    """Cheapest first (issue 18): when an opened row fails, the lanes are not re-walked."""
    from gpuproof.verifier import memory as vm_module

    def check_lanes(*args):  # noqa: ANN002, ANN202
        raise AssertionError("the lanes were re-walked for an answer whose rows failed")

    v = Verifier()
    c = v.issue("h200", now=0.0, shape=SHAPE)
    roots = CpuBackend().run(c.params)
    commitment = v.commit(c, roots, received_at=c.thresholds.expected_s)
    request = v.request_openings(c, commitment)
    bad = [Opening(r, i, np.zeros(c.params.n, dtype=np.int64), tuple(CpuBackend().open(c.params, r, i, roots)[1]))
           for r, i in sorted(set(request.pairs))]
    monkeypatch.setattr(vm_module, "check_lanes", check_lanes)
    verdict = v.judge(c, commitment, request, bad)
    assert verdict.correctness == Correctness.FAIL and not verdict.failure.reason.startswith("memory:")
    assert verdict.memory is not None and verdict.memory.failure == "not-checked" and not verdict.memory.passed
