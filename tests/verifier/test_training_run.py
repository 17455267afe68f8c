"""A training run's lifecycle (verifier.training.admit and close_run): which commitments are accepted, what
closing the run checks and draws. Plain data and a fake clock; the HTTP side is tests/gateway/test_training.py."""

from __future__ import annotations

import pytest
from gpuproof.verifier import checkpoints, training
from gpuproof.verifier.lifecycle import AlreadyCommitted, RunClosed, TooFewCommitments, TooManyCommitments

ZERO = checkpoints.ZERO
JOB = "cd" * 16
POLICY = training.TrainingPolicy(interval=10, segments=2, chunks=1, audit_deadline_s=600.0, max_commitments=3,
                                 min_step_s=1.0, arrival_slack_s=0.0)
H1, H2 = b"\x01" * 32, b"\x02" * 32
MANIFEST = (checkpoints.TensorEntry("w", "float32", (4,), 16, 0),)  # one chunk


def run(times: list[float]) -> list[training.Received]:
    return [training.Received(10 * i, ZERO, ZERO, ZERO, bytes([i]) * 32, MANIFEST, t) for i, t in enumerate(times)]


def test_a_commitment_is_stored_while_the_run_is_open_and_a_retry_replays():
    assert training.admit(JOB, 10, H1, None, None, 1, POLICY) == "store"
    assert training.admit(JOB, 10, H1, H1, None, 2, POLICY) == "replay"
    assert training.admit(JOB, 10, H1, H1, 5_000.0, 3, POLICY) == "replay"  # even after the close


def test_other_content_for_a_step_a_closed_run_and_too_many_are_refused():
    with pytest.raises(AlreadyCommitted, match=f"step 10 of job {JOB} has another commitment"):
        training.admit(JOB, 10, H2, H1, None, 2, POLICY)
    with pytest.raises(RunClosed, match=f"job {JOB}'s run was closed at 5000.0; no more commitments"):
        training.admit(JOB, 20, H1, None, 5_000.0, 2, POLICY)
    with pytest.raises(TooManyCommitments, match="the policy allows 3 per job"):
        training.admit(JOB, 30, H1, None, None, 3, POLICY)
    assert training.admit(JOB, 30, H1, None, None, 2, POLICY) == "store"


def test_closing_a_run_draws_its_audits_with_their_deadline():
    closed = training.close_run(JOB, run([0.0, 20.0, 40.0, 60.0]), POLICY, [], 1_000.0)
    assert closed.flags == () and closed.closed_at == 1_000.0 and closed.deadline_at == 1_600.0
    assert len(closed.audits) == 2  # policy.segments distinct segments between consecutive commitments
    assert all(a.end_step == a.start_step + 10 and a.chunks == (("w", 0),) for a in closed.audits)
    assert len({a.start_step for a in closed.audits}) == 2


def test_closing_checks_arrivals_against_the_fastest_card_claimed():
    fast = run([0.0, 1.0, 2.0])  # 10 steps a second: the floor of 1 s a step says at least 10 s apart
    flags = training.close_run(JOB, fast, POLICY, [], 0.0).flags
    assert len(flags) == 1 and flags[0].startswith("too-fast: steps 0->10")
    flops = training.TrainingPolicy(step_flops=2e12, arrival_slack_s=0.0)  # 1 s a step at 2 TOPS, 0.1 s at 20
    assert training.close_run(JOB, fast, flops, [2.0], 0.0).flags[0].startswith("too-fast")
    assert training.close_run(JOB, fast, flops, [2.0, 20.0], 0.0).flags == ()  # the fastest device counts


def test_a_run_needs_step_zero_and_one_more():
    with pytest.raises(TooFewCommitments, match=f"job {JOB} has 1 commitments; a run needs step 0 and at least "
                                                "one more"):
        training.close_run(JOB, run([0.0]), POLICY, [], 0.0)
