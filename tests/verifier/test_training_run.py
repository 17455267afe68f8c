"""A training run's lifecycle (verifier.training.admit and close_run: which commitments are accepted, what
closing the run checks and draws) and its segment audits' (requested -> ready -> judged). Plain data and a
fake clock; the HTTP side is tests/gateway/test_training.py."""

from __future__ import annotations

import pytest
from gpuproof.kernels.errors import InvalidParameter
from gpuproof.verifier import checkpoints, lifecycle, training
from gpuproof.verifier.lifecycle import (
    AlreadyCommitted,
    AlreadyJudged,
    AlreadyOpened,
    AlreadyUploaded,
    NotReady,
    RunClosed,
    TooFewCommitments,
    TooManyCommitments,
    WrongState,
)

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


# a segment audit: requested -> ready -> judged -----------------------------------------------------------
AID = "ef" * 16
UP, OTHER_UP = "aa" * 32, "bb" * 32
OPENED = lifecycle.digest({"batches": [[1]], "openings": []})
OTHER_OPENED = lifecycle.digest({"batches": [[2]], "openings": []})


def audit(state: str = "requested", **kw) -> training.AuditState:  # noqa: ANN003
    return training.AuditState(audit_id=AID, state=state, deadline_at=600.0, **kw)


def test_an_audit_is_ready_once_both_parts_are_stored_whatever_their_order():
    fresh = audit()
    assert training.answer_audit(fresh, "uploaded", UP) == "store"
    assert training.answer_audit(fresh, "opened", OPENED) == "store"
    assert training.after_answer(audit(upload_sha256=UP)) == "requested"
    assert training.after_answer(audit(openings_digest=OPENED)) == "requested"
    assert training.after_answer(audit(upload_sha256=UP, openings_digest=OPENED)) == "ready"


def test_an_audit_part_retry_replays_and_other_content_is_refused():
    uploaded = audit(upload_sha256=UP)
    assert training.answer_audit(uploaded, "uploaded", UP) == "replay"
    with pytest.raises(AlreadyUploaded, match=f"audit {AID} is requested and was uploaded with other content"):
        training.answer_audit(uploaded, "uploaded", OTHER_UP)
    opened = audit(openings_digest=OPENED)
    assert training.answer_audit(opened, "opened", OPENED) == "replay"
    with pytest.raises(AlreadyOpened, match="was opened with other content"):
        training.answer_audit(opened, "opened", OTHER_OPENED)


def test_a_judged_audit_takes_nothing_new():
    judged = audit("judged", upload_sha256=UP)
    assert training.answer_audit(judged, "uploaded", UP) == "replay"
    with pytest.raises(AlreadyJudged, match=f"^audit {AID} is judged$"):
        training.answer_audit(judged, "opened", OPENED)
    with pytest.raises(AlreadyJudged, match="and was uploaded with other content"):
        training.answer_audit(judged, "uploaded", OTHER_UP)
    with pytest.raises(WrongState):
        training.after_answer(judged)


def test_an_audit_expires_after_its_deadline_saying_what_was_missing():
    assert training.audit_expiry(audit(), 600.0) is None  # at the deadline: still in time
    assert training.audit_expiry(audit(), 600.5) == "the state upload and the openings did not arrive before the " \
                                                    "deadline"
    assert training.audit_expiry(audit(upload_sha256=UP), 601) == "the openings did not arrive before the deadline"
    ready = audit("ready", upload_sha256=UP, openings_digest=OPENED)
    assert training.audit_expiry(ready, 10_000) is None  # waiting for its validator, not for the provider


def test_a_replay_needs_a_ready_audit_and_its_verdict_is_recorded_once():
    ready = audit("ready", upload_sha256=UP, openings_digest=OPENED)
    training.require_ready(ready, "why", upload=True)
    with pytest.raises(NotReady, match=f"audit {AID} is requested; replay needs both parts"):
        training.require_ready(audit(upload_sha256=UP), "replay needs both parts")
    assert training.replay_result(ready, "sig1") == "store"
    with pytest.raises(NotReady, match=f"audit {AID} is requested"):
        training.replay_result(audit(), "sig1")
    judged = audit("judged", upload_sha256=UP, openings_digest=OPENED, verdict_signature="sig1")
    assert training.replay_result(judged, "sig1") == "replay"
    with pytest.raises(AlreadyJudged, match="has a verdict"):
        training.replay_result(judged, "sig2")
    with pytest.raises(InvalidParameter, match="ready only with its upload and its openings"):
        audit("ready", upload_sha256=UP)
