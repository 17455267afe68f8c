"""The calibration timed tests take their limits from (tests/support/calibrate.py)."""

from __future__ import annotations

import pytest
from gpuproof.gateway.settings import Settings
from gpuproof.kernels.spec import ChallengeParams
from gpuproof.verifier.profiles import load_profiles
from gpuproof.verifier.timing import TimingConfig, thresholds

from tests.support import calibrate


@pytest.fixture
def fresh_slowness(monkeypatch):
    """slowness() measured anew inside the test, and again (unforced) by whoever asks after it."""
    calibrate.slowness.cache_clear()
    yield monkeypatch
    calibrate.slowness.cache_clear()


@pytest.mark.parametrize("forced, factor", [("0.2", 1.0), ("1", 1.0), ("3.5", 3.5), ("1e6", calibrate.MAX_SLOWNESS)])
def test_the_factor_never_tightens_a_limit_and_never_makes_it_endless(fresh_slowness, forced, factor):
    fresh_slowness.setenv(calibrate.ENV, forced)
    assert calibrate.slowness() == factor
    assert calibrate.scaled(10) == pytest.approx(10 * factor)


def test_the_measured_factor_is_a_finite_number_of_at_least_one(fresh_slowness):
    fresh_slowness.delenv(calibrate.ENV, raising=False)
    assert 1.0 <= calibrate.slowness() <= calibrate.MAX_SLOWNESS


@pytest.mark.parametrize("slowness", [1.0, 2.5, 12.0])
def test_an_honest_cpu_challenge_allows_the_scaled_budget_by_the_products_own_rule(monkeypatch, slowness):
    """The shape goes through the gateway's own setting and the verifier's own thresholds: the slow bound
    an honest cpu-reference provider is judged against covers the budget, scaled, beyond the overhead."""
    monkeypatch.setattr(calibrate, "slowness", lambda: slowness)
    settings = Settings(verify_test_shape=calibrate.honest_test_shape(1.0))
    m, n, k, rounds = settings.test_shape("cpu-reference")
    config = TimingConfig()
    limits = thresholds(ChallengeParams(bytes(32), m, n, k, rounds), load_profiles()["cpu-reference"], config)
    assert limits.slow_s >= config.overhead_max_s + slowness * 1.0
    assert settings.test_shape("h100-sxm") == settings.test_shape() == (16, 256, 64, 3)  # others as before
