"""Sizing and timing verdicts, with the false-failure budget computed and simulated."""

from __future__ import annotations

import random

import pytest
from gpuproof.verifier.profiles import UNPROFILED, load_profiles
from gpuproof.verifier.timing import (
    TimingConfig,
    challenge_shape,
    classify,
    format_rate,
    honest_failure_probability,
    size_challenge,
    thresholds,
)

CONFIG = TimingConfig()
PROFILES = load_profiles()


def test_hopper_class_gets_the_big_shape_and_small_cards_smaller():
    assert challenge_shape(PROFILES["h100-sxm"]) == (8192, 8192, 32768)
    assert challenge_shape(PROFILES["h200"]) == (8192, 8192, 32768)
    small = challenge_shape(PROFILES["t4"])
    assert small[0] * small[1] * small[2] < 8192 * 8192 * 32768
    assert challenge_shape(PROFILES["cpu-reference"])[2] <= 1024


@pytest.mark.parametrize("key", sorted(PROFILES))
def test_expected_time_is_the_target_and_thresholds_are_ordered(key):
    profile = PROFILES[key]
    params = size_challenge(bytes(32), profile, CONFIG)
    t = thresholds(params, profile, CONFIG)
    assert t.expected_s == pytest.approx(CONFIG.target_seconds, rel=0.5 if params.rounds < 3 else 0.2)
    assert 0 <= t.fast_s < t.expected_s < t.slow_s < t.deadline_s


@pytest.mark.parametrize("key", sorted(PROFILES))
def test_false_failure_budget_holds_at_the_worst_corner(key):
    """The slowest honest card (eff_low, overhead_max) fails fewer than 1 in 10,000 challenges."""
    profile = PROFILES[key]
    params = size_challenge(bytes(32), profile, CONFIG)
    assert honest_failure_probability(params, profile, CONFIG) < 1e-4


def test_simulated_honest_slowest_cards_never_fail_in_10000_draws():
    rng = random.Random(7)
    profile = PROFILES["h100-sxm"]
    params = size_challenge(bytes(32), profile, CONFIG)
    t = thresholds(params, profile, CONFIG)
    work = 2.0 * params.m * params.n * params.k * params.rounds
    failures = 0
    for _ in range(10_000):
        compute = work / profile.rate_low * (1 + rng.gauss(0, CONFIG.compute_sigma))
        measured = compute + CONFIG.overhead_max_s + rng.gauss(0, CONFIG.rtt_sigma_s)
        failures += classify(measured, t, profile) != "consistent"
    assert failures <= 3  # expected 0.5 at a budget of 5e-5


def test_classes():
    profile = PROFILES["a100-80gb"]
    params = size_challenge(bytes(32), profile, CONFIG)
    t = thresholds(params, profile, CONFIG)
    assert classify(t.expected_s, t, profile) == "consistent"
    assert classify(t.slow_s * 1.01, t, profile) == "slower-than-claimed"
    assert classify(t.fast_s * 0.99, t, profile) == "faster-than-claimed"
    assert classify(t.deadline_s + 1, t, profile) == "timeout"
    assert classify(t.expected_s * 50, thresholds(params, UNPROFILED, CONFIG), UNPROFILED) == "unprofiled"


def test_config_is_validated():
    with pytest.raises(ValueError):
        TimingConfig(target_seconds=0)
    with pytest.raises(ValueError):
        TimingConfig(false_failure_budget=0.7)
    assert TimingConfig().z == pytest.approx(3.89, abs=0.01)


@pytest.mark.parametrize("ops_per_s, text", [
    (1.98e15, "1980 TOPS"), (989e12, "989 TOPS"), (1.234e12, "1.23 TOPS"), (999.96e9, "1.00 TOPS"),
    (41.24e9, "41.2 GOPS"), (3.07e6, "3.07 MOPS"), (2e3, "2.00 kOPS"), (12, "12.0 ops/s"),
])
def test_small_devices_rates_read_in_the_fitting_unit_not_0_0_tops(ops_per_s, text):
    assert format_rate(ops_per_s) == text
