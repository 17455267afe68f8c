"""The arrival-time rule for training commitments (verifier.training.timing_flags), without HTTP.

Regression (issue 14): an honest run on a loaded machine sent its commitments in a burst (its background
sender fell behind) and was flagged `too-fast: steps 0->4 committed 0.091 s apart`. An honest commitment can
arrive late, never early; the rule forgives delivery delays up to the policy's `arrival_slack_s` and still
catches a run sent all at once.
"""

from __future__ import annotations

from gpuproof.verifier import checkpoints, training
from hypothesis import assume, given, settings
from hypothesis import strategies as st

ZERO = checkpoints.ZERO


def received(times: list[float], interval: int = 4) -> list[training.Received]:
    return [training.Received(i * interval, ZERO, ZERO, ZERO, ZERO, (), t) for i, t in enumerate(times)]


def brute_force_too_fast(times: list[float], interval: int, floor_s: float, slack_s: float) -> bool:
    """The rule as docs/protocol.md states it, pair by pair (the independent twin of the one-pass check)."""
    return any(times[j] - times[i] + slack_s < 0.5 * (j - i) * interval * floor_s
               for i in range(len(times)) for j in range(i + 1, len(times)))


def too_fast(flags: list[str]) -> bool:
    return any(f.startswith("too-fast") for f in flags)


def test_an_honest_burst_after_a_delay_is_not_too_fast():
    # floor 0.05 s a step, 4 steps a commitment: 0.2 s apart at the fastest. Steps 0..12 were made on time
    # but sent late, in a burst 0.091 s apart, as seen on a loaded machine.
    times = [0.0, 0.8, 0.891, 0.95, 1.0, 1.2, 1.4]
    assert brute_force_too_fast(times, 4, 0.05, 0.0)  # what the old rule (no slack) flagged
    assert not too_fast(training.timing_flags(received(times), 0.05, slack_s=1.0))


def test_a_run_sent_all_at_once_is_too_fast():
    times = [0.0, *[30.0 + 0.01 * i for i in range(1, 25)]]  # 96 steps at >= 0.5 s each, sent at the end
    flags = training.timing_flags(received(times), 0.5, slack_s=1.0)
    assert too_fast(flags) and flags[0].startswith("too-fast: steps 4->")


def test_a_run_faster_than_the_card_is_too_fast_however_it_is_spread():
    times = [0.1 * i for i in range(50)]  # evenly spread, at a fifth of the card's fastest pace
    assert too_fast(training.timing_flags(received(times), 0.25, slack_s=1.0))


def test_no_floor_means_no_too_fast_check():
    assert training.timing_flags(received([0.0] * 6), 0.0, slack_s=0.0) == [
        f for f in training.timing_flags(received([0.0] * 6), 0.0, slack_s=0.0) if f.startswith("at-end")]


@settings(max_examples=300, deadline=None)
@given(gaps=st.lists(st.floats(0, 3), min_size=1, max_size=30), floor=st.floats(0.001, 0.5),
       slack=st.floats(0, 2))
def test_the_one_pass_check_agrees_with_every_pair(gaps, floor, slack):
    times = [0.0]
    for g in gaps:
        times.append(times[-1] + g)
    # A pair exactly on the limit is decided by float rounding, differently by the two (equivalent) forms of
    # the inequality; hypothesis found 2.0 -> 2.2703 with floor = slack = 0.2703. Judge clear cases only.
    assume(all(abs(times[j] - times[i] + slack - 2 * (j - i) * floor) > 1e-9
               for i in range(len(times)) for j in range(i + 1, len(times))))
    assert too_fast(training.timing_flags(received(times), floor, slack)) == brute_force_too_fast(times, 4, floor,
                                                                                                   slack)


@settings(max_examples=300, deadline=None)
@given(delays=st.lists(st.floats(0, 1.0), min_size=2, max_size=30), floor=st.floats(0.001, 0.5),
       extra=st.lists(st.floats(0, 0.5), min_size=30, max_size=30))
def test_honest_runs_delayed_up_to_the_slack_are_never_too_fast(delays, floor, extra):
    """Commitment i is made at or after its steps allow (made_i >= made_{i-1} + 4 x floor) and arrives at
    made_i + delay_i with 0 <= delay_i <= slack (1 s); no such run is flagged, and arrivals stay in order."""
    made = [0.0]
    for e in extra[:len(delays) - 1]:
        made.append(made[-1] + 4 * floor + e)
    arrivals, last = [], 0.0
    for m, d in zip(made, delays, strict=False):
        last = max(last, m + d)  # one connection: a later commitment is not received before an earlier one
        arrivals.append(last)
    assert not too_fast(training.timing_flags(received(arrivals), floor, slack_s=1.0))


def test_the_slack_is_part_of_the_policy_and_validated():
    assert training.TrainingPolicy.parse({"arrival_slack_s": 0.25}).arrival_slack_s == 0.25
    assert training.TrainingPolicy.parse({}).arrival_slack_s == 1.0
    import pytest
    from gpuproof.kernels.errors import InvalidParameter
    with pytest.raises(InvalidParameter, match="arrival_slack_s"):
        training.TrainingPolicy.parse({"arrival_slack_s": -1})
