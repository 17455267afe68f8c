"""The verifier's protocol: issue, commit, open after commit, judge."""

from __future__ import annotations

import numpy as np
import pytest

from kernels.backend import Opening
from kernels.errors import InvalidParameter
from verifier.adversary import Honest, SkipRows, run_strategy
from verifier.protocol import Verifier, VerifierConfig

SHAPE = (16, 256, 64, 3)
V = Verifier()


def play(shape=SHAPE, model="cpu-reference", delay=None, rtt=0.0, strategy=None):
    challenge = V.issue(model, now=1000.0, shape=shape)
    held = (strategy or Honest()).commit(challenge.params)
    t = challenge.thresholds.expected_s if delay is None else delay
    commitment = V.commit(challenge, held.roots, received_at=1000.0 + t + rtt, rtt_s=rtt)
    request = V.request_openings(challenge, commitment)
    return challenge, held, commitment, request


def test_issue_gives_fresh_seeds_ids_and_hopper_sizing():
    a = V.issue("NVIDIA H100 80GB HBM3", now=0.0)
    b = V.issue("NVIDIA H100 80GB HBM3", now=0.0)
    assert a.params.seed != b.params.seed and a.challenge_id != b.challenge_id
    assert (a.params.m, a.params.n, a.params.k) == (8192, 8192, 32768)
    assert a.profile == "h100-sxm" and a.spot_checks == 32
    assert set(a.public()) >= {"challenge_id", "seed", "m", "n", "k", "rounds", "deadline_s"}


def test_unknown_device_is_challenged_and_judged_unprofiled():
    challenge = V.issue("Mystery Accelerator 9000", now=0.0)
    assert challenge.profile == "unprofiled"
    c2, held, commitment, request = play(model="Mystery Accelerator 9000", delay=0.5)
    verdict = V.judge(c2, commitment, request, [held.honest_opening(c2.params, r, i) for r, i in request.pairs])
    assert verdict.outcome == "pass" and verdict.timing == "unprofiled" and verdict.best_match


@pytest.mark.parametrize("model", ["", " ", "x" * 201])
def test_issue_rejects_bad_model_names(model):
    with pytest.raises(InvalidParameter):
        V.issue(model, now=0.0)


def test_commit_checks_the_roots_shape_and_measures_time_minus_rtt():
    challenge = V.issue("cpu-reference", now=100.0, shape=SHAPE)
    with pytest.raises(InvalidParameter, match="has 2 roots, want 3"):
        V.commit(challenge, [bytes(32)] * 2, received_at=101.0)
    with pytest.raises(InvalidParameter, match="root 1"):
        V.commit(challenge, [bytes(32), b"short", bytes(32)], received_at=101.0)
    commitment = V.commit(challenge, [bytes(32)] * 3, received_at=102.5, rtt_s=0.15)
    assert commitment.measured_s == pytest.approx(2.35)
    capped = V.commit(challenge, [bytes(32)] * 3, received_at=102.5, rtt_s=5.0)
    assert capped.rtt_s == 0.2 and capped.measured_s == pytest.approx(2.3)


def test_opening_request_is_uniform_over_rounds_and_rows():
    challenge, held, commitment, _ = play()
    seen = set()
    for _ in range(200):
        request = V.request_openings(challenge, commitment)
        assert len(request.pairs) == 32 and request.x.shape == (256,)
        assert all(0 <= r < 3 and 0 <= i < 16 for r, i in request.pairs)
        seen.update(request.pairs)
    assert len(seen) == 48  # every (round, row) drawn at least once in 6400 draws


def test_honest_prover_passes_with_reasons_and_a_bound():
    challenge, verdict = run_strategy(Honest(), V, shape=SHAPE)
    assert verdict.outcome == "pass" and verdict.correctness == "pass" and verdict.timing == "consistent"
    assert verdict.failure is None and len(verdict.reasons) == 2
    assert 0 < verdict.cheat_pass_probability < 1e-6
    assert verdict.to_json()["cheat_model"]["spot_checks"] == 32


def test_skipping_prover_fails_with_the_row_and_column():
    challenge, verdict = run_strategy(SkipRows(1.0), V, shape=SHAPE)
    assert verdict.outcome == "fail" and verdict.failure.reason == "wrong-value"
    assert "wrong value at column" in verdict.failure.detail


def test_missing_and_foreign_openings_fail():
    challenge, held, commitment, request = play()
    openings = [held.honest_opening(challenge.params, r, i) for r, i in request.pairs]
    dropped = request.pairs[0]
    verdict = V.judge(challenge, commitment, request, [o for o in openings if (o.round, o.row) != dropped])
    assert verdict.failure is not None and verdict.failure.reason == "missing"
    assert (verdict.failure.round, verdict.failure.row) == dropped
    other, _, _, other_request = play()
    verdict = V.judge(challenge, commitment, other_request, openings)
    assert verdict.failure.reason == "wrong-challenge"


def test_slow_commitment_is_slower_than_claimed_and_names_the_matching_profile():
    challenge = V.issue("NVIDIA A100 80GB", now=0.0)
    slow = challenge.thresholds.slow_s * 3
    commitment = V.commit(challenge, [bytes(32)] * challenge.params.rounds, received_at=slow)
    request = V.request_openings(challenge, commitment)
    verdict = V.judge(challenge, commitment, request, [])
    assert verdict.timing == "slower-than-claimed" and verdict.outcome == "fail"
    assert verdict.best_match != "a100-80gb"
    assert "slower than any honest a100-80gb" in verdict.reasons[1]


def test_cheat_bound_for_hopper_uses_the_fastest_slower_card():
    challenge = V.issue("NVIDIA H100 80GB HBM3", now=0.0)
    commitment = V.commit(challenge, [bytes(32)] * challenge.params.rounds, received_at=challenge.thresholds.expected_s)
    verdict = V.judge(challenge, commitment, V.request_openings(challenge, commitment), [])
    model = verdict.cheat_model
    assert model["substitute"] not in ("h100-sxm", "h200")
    assert 0 < model["max_fraction_of_rows"] < 1
    assert verdict.cheat_pass_probability == pytest.approx(model["max_fraction_of_rows"] ** 32 + 32 * 2.0**-32)
    work = 2.0 * challenge.params.m * challenge.params.n * challenge.params.k * challenge.params.rounds
    sub = V.profiles[model["substitute"]]
    assert model["max_fraction_of_rows"] == pytest.approx(sub.rate_high * (challenge.thresholds.slow_s + 0.2) / work)


def test_config_validation():
    with pytest.raises(InvalidParameter):
        VerifierConfig(spot_checks=0)


def test_opening_values_of_wrong_dtype_are_rejected_cleanly():
    challenge, held, commitment, request = play()
    r, i = request.pairs[0]
    o = held.honest_opening(challenge.params, r, i)
    bad = Opening(r, i, np.zeros(5, np.int64), o.path)
    verdict = V.judge(challenge, commitment, request, [bad])
    assert verdict.failure.reason == "bad-length"
