"""The verifier's protocol: issue, commit, open after commit, judge."""

from __future__ import annotations

import numpy as np
import pytest
from gpuproof.kernels.backend import Opening
from gpuproof.kernels.errors import InvalidParameter
from gpuproof.simulators.protocol import Honest, SkipRows, run_strategy
from gpuproof.verifier.protocol import Verifier, VerifierConfig, cheat_bound
from gpuproof.verifier.timing import size_challenge, thresholds

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


def test_new_challenges_are_v2_and_a_v1_challenge_is_still_judged():
    assert V.issue("NVIDIA H100 80GB HBM3", now=0.0).params.spec == "gpuproof/2"
    assert V.issue("cpu-reference", now=0.0, shape=SHAPE).public()["spec"] == "gpuproof/2"
    assert Verifier(VerifierConfig(spec="gpuproof/1")).issue("cpu-reference", now=0.0).params.spec == "gpuproof/1"
    for spec in ("gpuproof/1", "gpuproof/2"):
        challenge = V.issue("cpu-reference", now=1000.0, shape=SHAPE, spec=spec)
        held = Honest().commit(challenge.params)
        commitment = V.commit(challenge, held.roots, received_at=1000.0 + challenge.thresholds.expected_s)
        request = V.request_openings(challenge, commitment)
        verdict = V.judge(challenge, commitment, request, Honest().open(challenge.params, held, request.pairs,
                                                                        request.x))
        assert verdict.outcome == "pass", verdict.reasons
    with pytest.raises(InvalidParameter):
        VerifierConfig(spec="gpuproof/3")


def test_a_v1_answer_to_a_v2_challenge_fails_wrong_value():
    """Same seed and shape, the other spec's rows: committed (the paths check) but wrong."""
    from dataclasses import replace

    challenge = V.issue("cpu-reference", now=1000.0, shape=SHAPE)
    held = Honest().commit(replace(challenge.params, spec="gpuproof/1"))
    commitment = V.commit(challenge, held.roots, received_at=1000.0 + challenge.thresholds.expected_s)
    request = V.request_openings(challenge, commitment)
    openings = Honest().open(replace(challenge.params, spec="gpuproof/1"), held, request.pairs, request.x)
    verdict = V.judge(challenge, commitment, request, openings)
    assert verdict.outcome == "fail" and verdict.failure.reason == "wrong-value"


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
    assert verdict.failure is None and len(verdict.reasons) == 3 and "cheat bound" in verdict.reasons[2]
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
    assert model["slower_card_bound"] == pytest.approx(model["max_fraction_of_rows"] ** 32 + 32 * 2.0**-32)
    assert verdict.cheat_pass_probability == 1.0  # lesser cards (an L40S at its peak) are not slower
    work = 2.0 * challenge.params.m * challenge.params.n * challenge.params.k * challenge.params.rounds
    sub = V.profiles[model["substitute"]]
    assert model["max_fraction_of_rows"] == pytest.approx(sub.rate_peak * (challenge.thresholds.slow_s + 0.2) / work)


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


@pytest.mark.parametrize("model", ["NVIDIA GeForce RTX 5090", "Tesla V100-SXM2-16GB", "H100 80GB HBM3 SXM5"])
def test_unknown_model_stored_as_unprofiled_is_challenged_not_a_keyerror(model):
    # The gateway stores lookup()'s key with the device and passes it back as profile_key; "unprofiled"
    # is not a key of the profiles file (issue 16: these polls failed with KeyError('unprofiled')).
    challenge = V.issue(model, now=0.0, profile_key="unprofiled")
    assert challenge.profile == "unprofiled" and challenge.params.rounds >= 1
    assert V.issue(model, now=0.0).profile == "unprofiled"
    commitment = V.commit(challenge, [bytes(32)] * challenge.params.rounds, received_at=1.0)
    verdict = V.judge(challenge, commitment, V.request_openings(challenge, commitment), [])
    assert verdict.timing == "unprofiled" and verdict.claimed_profile == "unprofiled"


def test_a_challenge_issued_unprofiled_is_judged_unprofiled_even_once_its_name_is_profiled():
    # A device registered as "NVIDIA H100 NVL" before that name had a profile keeps "unprofiled" until it
    # registers again; its challenge's thresholds are the unprofiled ones, so its verdict must be too.
    challenge = V.issue("NVIDIA H100 NVL", now=0.0, profile_key="unprofiled")
    assert challenge.profile == "unprofiled" and not V.profile_of(challenge).is_profiled
    commitment = V.commit(challenge, [bytes(32)] * challenge.params.rounds, received_at=0.5)
    assert V.judge(challenge, commitment, V.request_openings(challenge, commitment), []).timing == "unprofiled"


def _bound_of(key, profiles=None):
    profiles = V.profiles if profiles is None else profiles
    profile, config = profiles[key], V.config.timing
    params = size_challenge(bytes(32), profile, config)
    limits = thresholds(params, profile, config)
    bound, model = cheat_bound(params, profile, limits, 32, profiles, config.max_rtt_allowance_s)
    work = 2.0 * params.m * params.n * params.k * params.rounds
    return bound, model, work / (limits.slow_s + config.max_rtt_allowance_s)


def test_cheat_bound_ceiling_is_the_datasheet_peak_not_the_estimated_band():
    # Issue 16: an L40S at its datasheet peak (733 TOPS) beats the H100 claim's slowest accepted rate, so
    # it can compute every row in time (f = 1); the old model capped it at eff_high and stated f = 0.906.
    bound, model, slowest = _bound_of("h100-sxm")
    l40s = V.profiles["l40s"]
    assert l40s.int8_tops * 1e12 >= slowest
    assert "l40s" in model["indistinguishable_by_timing"] and "l40s" in model["lesser_indistinguishable"]
    assert model["substitute"] != "l40s" and bound == 1.0
    sub = V.profiles[model["substitute"]]
    assert sub.int8_tops * 1e12 < slowest
    assert model["max_fraction_of_rows"] == pytest.approx(sub.int8_tops * 1e12 / slowest)


def test_indistinguishable_list_holds_every_card_whose_peak_reaches_the_slowest_accepted_rate():
    # Issue 16: a strict "<" on typical rates dropped a100-40gb (same compute) from a100-80gb's list.
    for key in ("h200", "h100-sxm", "h100-pcie", "a100-80gb", "rtx-4090", "t4"):
        _, model, slowest = _bound_of(key)
        # the physical peak: the datasheet rate (the CPU reference's band top, its nominal figure being none)
        want = sorted(p.key for p in V.profiles.values()
                      if p.key != key and p.int8_tops * 1e12 * max(1.0, p.eff_high) >= slowest)
        assert model["indistinguishable_by_timing"] == want, key
    assert "a100-40gb" in _bound_of("a100-80gb")[1]["indistinguishable_by_timing"]
    assert "a100-40gb" in _bound_of("a100-80gb")[1]["lesser_indistinguishable"]
    assert "h100-sxm" in _bound_of("h200")[1]["lesser_indistinguishable"]


def test_h200_verdict_states_that_an_h100_passes_as_an_h200():
    # Issue 16: the H200 verdict stated 1.1e-4 while an H100 SXM (same tensor cores, 80 GB not 141)
    # passes its timing with probability ~1; spec v1 does not challenge memory.
    challenge = V.issue("NVIDIA H200", now=0.0)
    commitment = V.commit(challenge, [bytes(32)] * challenge.params.rounds, received_at=challenge.thresholds.expected_s)
    verdict = V.judge(challenge, commitment, V.request_openings(challenge, commitment), [])
    model = verdict.cheat_model
    assert verdict.cheat_pass_probability == 1.0
    assert model["worst_case"] == "lesser-card" and model["worst_case_substitute"] in model["lesser_indistinguishable"]
    assert "h100-sxm" in model["lesser_indistinguishable"]
    assert 0 < model["slower_card_bound"] < 0.05  # a slower card (an L40S) skipping rows is still caught
    assert any("up to 1" in r and "h100-sxm" in r for r in verdict.reasons)


def test_the_bound_is_the_slower_card_bound_only_when_no_lesser_card_passes():
    profiles = {k: V.profiles[k] for k in ("h100-sxm", "h200", "a100-80gb", "t4")}
    bound, model, _ = _bound_of("h100-sxm", profiles)
    assert model["indistinguishable_by_timing"] == ["h200"] and model["lesser_indistinguishable"] == []
    assert model["worst_case"] == "slower-card" and model["worst_case_substitute"] == "a100-80gb"
    assert bound == model["slower_card_bound"] < 0.1
