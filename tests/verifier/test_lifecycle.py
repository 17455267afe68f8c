"""The challenge lifecycle's rules (verifier/lifecycle.py) over plain data and a fake clock: no HTTP, no
database. The HTTP tests (tests/gateway/test_api.py) cover what the adapter adds (auth, codes, storage)."""

from __future__ import annotations

import math

import pytest
from gpuproof.kernels.errors import GpuproofError, InvalidParameter
from gpuproof.verifier import lifecycle, schedule
from gpuproof.verifier.lifecycle import (
    AlreadyCommitted,
    AlreadyEchoed,
    AlreadyJudged,
    ChallengeState,
    DeadlinePassed,
    LifecycleError,
    NotCommitted,
    ProbeExpired,
    Settlement,
    WrongState,
)
from gpuproof.verifier.schedule import SchedulePolicy

CID = "ab" * 16
T0 = 1_000.0  # the fake clock's issue instant
DEADLINE = 8.0
ROOTS = lifecycle.digest(["11" * 32, "22" * 32])
OTHER_ROOTS = lifecycle.digest(["11" * 32, "33" * 32])
OPENINGS = lifecycle.digest([{"round": 0, "row": 3, "values": [1, 2], "path": []}])
OTHER_OPENINGS = lifecycle.digest([{"round": 0, "row": 3, "values": [1, 5], "path": []}])


class Clock:
    """A fake clock: time moves only when the test says so."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def issued(**kw) -> ChallengeState:  # noqa: ANN003
    return ChallengeState(challenge_id=CID, state="issued", issued_at=T0, deadline_s=DEADLINE, **kw)


def committed_and_requested(clock: Clock) -> ChallengeState:
    step = lifecycle.commit(issued(delivered_at=T0), ROOTS, clock())
    drawn = lifecycle.draw(step.state)
    assert drawn is not None
    return drawn


# the happy path, step by step ------------------------------------------------------------------------------
def test_a_challenge_goes_issued_committed_requested_judged():
    clock = Clock()
    ch = lifecycle.deliver(issued(), clock.advance(0.5))
    assert ch.delivered_at == T0 + 0.5 and ch.state == "issued" and ch.is_open
    step = lifecycle.commit(ch, ROOTS, clock.advance(2.0))
    assert step.action == "store"
    assert (step.state.state, step.state.committed, step.state.commit_digest, step.state.requested) == \
        ("committed", True, ROOTS, False)
    drawn = lifecycle.draw(step.state)
    assert drawn is not None and drawn.requested and drawn.state == "committed"
    assert lifecycle.openings(drawn, OPENINGS, clock.advance(1.0)) == "judge"
    judged = lifecycle.judge(drawn, clock(), OPENINGS)
    assert (judged.state, judged.openings_digest, judged.judged_at, judged.is_open) == \
        ("judged", OPENINGS, T0 + 3.5, False)


def test_delivery_keeps_the_first_time():
    first = lifecycle.deliver(issued(), T0 + 1)
    assert lifecycle.deliver(first, T0 + 9).delivered_at == T0 + 1


def test_the_request_is_drawn_once():
    clock = Clock()
    drawn = committed_and_requested(clock)
    assert lifecycle.draw(drawn) is None  # drawn already: answer with the stored request


def test_no_request_before_a_commitment():
    with pytest.raises(WrongState, match="expected a challenge in state committed, got issued"):
        lifecycle.draw(issued())


# the deadline, written once --------------------------------------------------------------------------------
@pytest.mark.parametrize("what", ["commitment", "openings"])
def test_exactly_at_the_deadline_is_in_time_and_just_after_is_not(what):
    clock = Clock()
    ch = issued() if what == "commitment" else committed_and_requested(clock)

    def send(now: float) -> str:
        return lifecycle.commit(ch, ROOTS, now).action if what == "commitment" \
            else lifecycle.openings(ch, OPENINGS, now)

    assert send(T0 + DEADLINE) in ("store", "judge")
    late = math.nextafter(T0 + DEADLINE, math.inf)
    with pytest.raises(DeadlinePassed) as caught:
        send(late)
    assert caught.value.what == what and caught.value.deadline_s == DEADLINE
    assert str(caught.value) == f"the {what} came {late - T0:.3f} s after issue; the deadline was 8.000 s"
    with pytest.raises(DeadlinePassed, match=rf"the {what} came 9\.250 s after issue; the deadline was 8\.000 s"):
        send(T0 + 9.25)


def test_a_commitment_before_issue_time_is_in_time():
    assert lifecycle.commit(issued(), ROOTS, T0 - 1).action == "store"  # a clock step back is not late


# retries, recognised by digest -----------------------------------------------------------------------------
def test_a_commitment_retry_with_the_same_roots_replays_even_after_the_deadline():
    clock = Clock()
    drawn = committed_and_requested(clock)
    step = lifecycle.commit(drawn, ROOTS, T0 + DEADLINE + 100)
    assert step.action == "replay" and step.state == drawn


def test_a_commitment_stored_but_not_drawn_is_drawn_on_its_retry():
    stored = lifecycle.commit(issued(), ROOTS, T0 + 1).state
    assert lifecycle.commit(stored, ROOTS, T0 + 2).action == "draw"


def test_a_commitment_with_other_roots_is_refused():
    clock = Clock()
    for ch in (lifecycle.commit(issued(), ROOTS, T0).state, committed_and_requested(clock)):
        with pytest.raises(AlreadyCommitted, match=f"challenge {CID} is committed with other roots"):
            lifecycle.commit(ch, OTHER_ROOTS, T0 + 1)


def test_an_openings_retry_with_the_same_digest_replays_and_other_openings_are_refused():
    clock = Clock()
    judged = lifecycle.judge(committed_and_requested(clock), T0 + 3, OPENINGS)
    assert lifecycle.openings(judged, OPENINGS, T0 + 4) == "replay"
    assert lifecycle.openings(judged, OPENINGS, T0 + 10_000) == "replay"  # a retry is never late
    with pytest.raises(AlreadyJudged, match=f"challenge {CID} was judged on other openings"):
        lifecycle.openings(judged, OTHER_OPENINGS, T0 + 4)


def test_the_digest_is_of_the_content_not_its_spelling():
    assert lifecycle.digest({"a": 1, "b": [1, 2]}) == lifecycle.digest({"b": [1, 2], "a": 1})
    assert lifecycle.digest({"a": 1}) != lifecycle.digest({"a": 2})
    assert len(lifecycle.digest([])) == 64


def test_a_concurrent_retry_that_judged_first_wins():
    """Re-checked under the row's lock: the second of two identical requests replays, another is refused."""
    clock = Clock()
    ch = committed_and_requested(clock)
    assert lifecycle.openings(ch, OPENINGS, T0 + 2) == "judge"  # both requests read this, outside the lock
    first = lifecycle.judge(ch, T0 + 3, OPENINGS)  # the first stores its verdict
    assert lifecycle.openings(first, OPENINGS, T0 + 2) == "replay"  # the same openings: the verdict on record
    with pytest.raises(AlreadyJudged):
        lifecycle.openings(first, OTHER_OPENINGS, T0 + 2)
    with pytest.raises(AlreadyJudged, match="judged on other openings"):
        lifecycle.judge(first, T0 + 4, OPENINGS)  # never judged twice


# refusals of a judged or uncommitted challenge ---------------------------------------------------------------
def test_openings_without_a_commitment_or_request_are_refused():
    with pytest.raises(NotCommitted, match=f"challenge {CID} has no commitment yet"):
        lifecycle.openings(issued(), OPENINGS, T0 + 1)
    stored = lifecycle.commit(issued(), ROOTS, T0 + 1).state  # committed, request not drawn yet
    with pytest.raises(NotCommitted):
        lifecycle.openings(stored, OPENINGS, T0 + 2)
    with pytest.raises(NotCommitted, match="no opening request"):
        lifecycle.judge(stored, T0 + 2, OPENINGS)


def test_a_timeout_says_what_was_missing():
    no_commitment = lifecycle.judge(issued(), T0 + 100)
    with pytest.raises(AlreadyJudged, match=r"judged a timeout \(no commitment before its deadline\)"):
        lifecycle.commit(no_commitment, ROOTS, T0 + 101)
    with pytest.raises(AlreadyJudged, match=r"judged a timeout \(no commitment before its deadline\)"):
        lifecycle.openings(no_commitment, OPENINGS, T0 + 101)
    withheld = lifecycle.judge(committed_and_requested(Clock()), T0 + 100)
    with pytest.raises(AlreadyJudged, match=r"judged a timeout \(no openings before its deadline\)"):
        lifecycle.openings(withheld, OPENINGS, T0 + 101)
    assert lifecycle.commit(withheld, ROOTS, T0 + 101).action == "replay"  # its request is on record


def test_a_judged_challenge_whose_request_was_never_drawn_draws_none():
    stored = lifecycle.commit(issued(), ROOTS, T0 + 1).state
    timed_out = lifecycle.judge(stored, T0 + 100)
    with pytest.raises(AlreadyJudged, match="judged a timeout"):
        lifecycle.commit(timed_out, ROOTS, T0 + 101)
    with pytest.raises(WrongState):
        lifecycle.draw(timed_out)


def test_every_refusal_is_a_lifecycle_error_of_gpuproof():
    for cls in (DeadlinePassed, AlreadyJudged, AlreadyCommitted, NotCommitted, WrongState, AlreadyEchoed,
                ProbeExpired, lifecycle.RunClosed, lifecycle.TooManyCommitments, lifecycle.TooFewCommitments):
        assert issubclass(cls, LifecycleError) and issubclass(cls, GpuproofError)


@pytest.mark.parametrize("fields, complaint", [
    ({"state": "open"}, "state"),
    ({"state": "issued", "committed": True}, "state"),
    ({"state": "committed", "requested": True}, "requested"),
    ({"state": "committed", "committed": True, "openings_digest": OPENINGS}, "openings_digest"),
    ({"state": "issued", "deadline_s": 0.0}, "deadline_s"),
    ({"state": "issued", "issued_at": math.nan}, "issued_at"),
])
def test_an_impossible_state_cannot_be_made(fields, complaint):
    base = {"challenge_id": CID, "issued_at": T0, "deadline_s": DEADLINE} | fields
    with pytest.raises(InvalidParameter, match=complaint):
        ChallengeState(**base)


# expiry and its grace ----------------------------------------------------------------------------------------
def test_expiry_waits_for_the_grace_after_the_deadline():
    ch = issued(delivered_at=T0)
    assert lifecycle.expiry(ch, T0 + DEADLINE + 30, grace_s=30) is None  # exactly at deadline + grace
    assert lifecycle.expiry(ch, T0 + DEADLINE + 29, grace_s=30) is None
    due = lifecycle.expiry(ch, T0 + DEADLINE + 30.001, grace_s=30)
    assert due == lifecycle.Expiry(committed=False, requested=False, start_window_s=None)
    assert lifecycle.expiry(ch, T0 + DEADLINE + lifecycle.EXPIRY_GRACE_S) is None  # the default grace
    assert lifecycle.expiry(ch, T0 + DEADLINE + lifecycle.EXPIRY_GRACE_S + 1) is not None


def test_the_asking_device_gets_no_grace():
    ch = issued(delivered_at=T0)
    assert lifecycle.expiry(ch, T0 + DEADLINE, grace_s=60, asking=True) is None  # at the deadline: in time
    assert lifecycle.expiry(ch, T0 + DEADLINE + 0.001, grace_s=60, asking=True) is not None
    assert lifecycle.expiry(ch, T0 + DEADLINE + 0.001, grace_s=60) is None


def test_expiry_says_what_the_challenge_had():
    clock = Clock()
    requested = committed_and_requested(clock)
    assert lifecycle.expiry(requested, T0 + 100, grace_s=0) == lifecycle.Expiry(True, True, None)
    stored = lifecycle.commit(issued(delivered_at=T0), ROOTS, T0 + 1).state
    assert lifecycle.expiry(stored, T0 + 100, grace_s=0) == lifecycle.Expiry(True, False, None)


def test_a_challenge_not_picked_up_within_the_start_window_is_missed_at_once():
    policy = SchedulePolicy(start_window_s=5.0)
    undelivered = issued()
    assert lifecycle.expiry(undelivered, T0 + 5.0, policy=policy) is None  # exactly at the window's end
    assert lifecycle.expiry(undelivered, T0 + 5.001, policy=policy) == lifecycle.Expiry(False, False, 5.0)
    assert lifecycle.expiry(undelivered, T0 + 5.001) is None  # without a policy only the deadline counts
    delivered = lifecycle.deliver(undelivered, T0 + 1)
    assert lifecycle.expiry(delivered, T0 + 6, policy=policy) is None  # picked up: its deadline rules


def test_a_judged_challenge_does_not_expire_and_the_grace_is_checked():
    with pytest.raises(WrongState, match="cannot expire"):
        lifecycle.expiry(lifecycle.judge(issued(), T0 + 100), T0 + 200)
    with pytest.raises(InvalidParameter, match="grace_s"):
        lifecycle.expiry(issued(), T0, grace_s=-1)


# scheduling --------------------------------------------------------------------------------------------------
POLICY = SchedulePolicy(mean_interval_s=3600.0, job_mean_interval_s=600.0, min_gap_s=None)  # gaps 360 / 60 s


def test_a_round_waits_for_its_drawn_time():
    assert lifecycle.round_due_at(T0 + 10, None, False, T0, POLICY) == T0 + 10
    assert lifecycle.round_due_at(T0 + 0.001, None, False, T0, POLICY) == T0 + 0.001
    assert lifecycle.round_due_at(T0, None, False, T0, POLICY) is None  # due exactly at its time


def test_no_two_rounds_closer_than_the_minimum_gap():
    last = T0 - 100  # the last round, 100 s ago; the drawn time was moved to now
    assert lifecycle.round_due_at(T0, last, False, T0, POLICY) == last + 360  # idle gap: mean / 10
    assert lifecycle.round_due_at(T0, last, True, T0, POLICY) is None  # a job is open: gap 60 s is over
    assert lifecycle.round_due_at(last, last, True, last + 59, POLICY) == last + 60  # 59 s after the last


def test_a_waiting_poll_is_quiet_until_a_round_could_be_due():
    assert lifecycle.quiet_until(T0 + 500, None, T0, POLICY) == T0 + 500
    assert lifecycle.quiet_until(T0 - 1, T0 - 10, T0, POLICY) == T0 + 50  # the job gap, the smaller one
    assert lifecycle.quiet_until(T0 - 1, T0 - 100, T0, POLICY) is None


def test_a_round_challenges_every_device_not_still_answering():
    rnd = lifecycle.issue_round([1, 2, 3], {2}, T0, False, POLICY, uniform=lambda: 0.0)
    assert rnd.devices == (1, 3)
    assert rnd.next_due_at == pytest.approx(T0 + 360)  # a draw of 0: the gap exactly
    u = 0.5
    later = lifecycle.issue_round([1], (), T0, True, POLICY, uniform=lambda: u)
    assert later.next_due_at == pytest.approx(T0 + 60 - (600 - 60) * math.log1p(-u))
    assert later.next_due_at == schedule.next_round_at(T0, True, POLICY, lambda: u)


# round trips -------------------------------------------------------------------------------------------------
def test_the_rtt_allowance_is_the_least_of_the_last_five_within_the_hour():
    now = T0 + 10_000
    probes = [(now - 10 * i, 0.05 + 0.01 * i) for i in range(8)]  # newest first: 0.05, 0.06, ...
    assert lifecycle.rtt_allowance(probes, now) == pytest.approx(0.05)
    old_fast = [(now - lifecycle.RTT_HISTORY_S - 1, 0.001)]
    assert lifecycle.rtt_allowance(probes + old_fast, now) == pytest.approx(0.05)  # too old to count
    sixth_fastest = probes[:5] + [(now - 500, 0.001)]  # older than the last five measured
    assert lifecycle.rtt_allowance(sixth_fastest, now) == pytest.approx(0.05)
    assert lifecycle.rtt_allowance([(now - 1, None)], now) == 0.0  # never echoed: no allowance


def test_a_probe_is_echoed_once_within_the_window():
    assert lifecycle.echo("p", T0, None, T0 + 0.25) == pytest.approx(0.25)
    assert lifecycle.echo("p", T0, None, T0 + lifecycle.RTT_ECHO_WINDOW_S) == lifecycle.RTT_ECHO_WINDOW_S
    with pytest.raises(AlreadyEchoed, match="probe p was echoed before"):
        lifecycle.echo("p", T0, 0.25, T0 + 1)
    with pytest.raises(ProbeExpired, match=r"probe p is 31\.0 s old; echo within 30 s"):
        lifecycle.echo("p", T0, None, T0 + 31)


# settlement --------------------------------------------------------------------------------------------------
def test_a_settlement_is_recorded_when_it_changes_and_release_or_refund_is_final():
    never = Settlement(None, (), False)
    held = lifecycle.settle(never, "hold", ["not proven yet"])
    assert held == Settlement("hold", ("not proven yet",), False)
    assert lifecycle.settle(held, "hold", ("not proven yet",)) is None  # nothing changed: nothing logged
    assert lifecycle.settle(held, "hold", ["other reason"]) == Settlement("hold", ("other reason",), False)
    released = lifecycle.settle(held, "release", ["proven"])
    assert released is not None and released.final
    refunded = lifecycle.settle(held, "refund", ["cheated"])
    assert refunded is not None and refunded.final
    with pytest.raises(WrongState, match="final"):
        lifecycle.settle(released, "refund", ["late news"])
