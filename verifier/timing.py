"""Challenge sizing and timing verdicts (docs/protocol.md, "Timing"; docs/threat-model.md).

Model of an honest prover: t = W / (peak * eff) + overhead, with W = 2*m*n*k*R integer operations,
eff anywhere in the profile's band [eff_low, eff_high], overhead in [0, overhead_max], multiplicative
compute jitter of relative sd `compute_sigma`, and the verifier's round-trip estimate off by a normal
error of sd `rtt_sigma`. The slow threshold puts the slowest honest card (eff_low, overhead_max) at
z = 3.89 standard deviations (5e-5) from failing: fewer than 1 in 10,000 honest challenges fail.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

from gpuproof.kernels.errors import InvalidParameter
from gpuproof.kernels.spec import SPEC, ChallengeParams, definition
from gpuproof.verifier.outcome import TIMING_CLASSES, Timing
from gpuproof.verifier.profiles import Profile

__all__ = ["TIMING_CLASSES", "Thresholds", "Timing", "TimingConfig", "classify", "format_rate", "size_challenge",
           "thresholds"]

FALSE_FAILURE_BUDGET = 5e-5  # at the worst corner (eff_low, overhead_max); "fewer than 1 in 10,000"


@dataclass(frozen=True)
class TimingConfig:
    """Policy knobs of the timing verdict; every default is justified in docs/protocol.md."""

    target_seconds: float = 2.0
    overhead_max_s: float = 0.25
    compute_sigma: float = 0.03
    rtt_sigma_s: float = 0.02
    max_rtt_allowance_s: float = 0.2
    false_failure_budget: float = FALSE_FAILURE_BUDGET
    deadline_factor: float = 3.0
    deadline_floor_s: float = 10.0
    max_rounds: int = 100_000

    def __post_init__(self) -> None:
        for name in ("target_seconds", "compute_sigma", "rtt_sigma_s", "false_failure_budget", "deadline_factor"):
            if not getattr(self, name) > 0:
                raise InvalidParameter(name, f"must be positive, got {getattr(self, name)!r}")
        if not 0 < self.false_failure_budget < 0.5:
            raise InvalidParameter("false_failure_budget", "must be in (0, 0.5)")

    @property
    def z(self) -> float:
        """One-sided normal quantile of the false-failure budget (3.89 for 5e-5)."""
        return -NormalDist().inv_cdf(self.false_failure_budget)


@dataclass(frozen=True)
class Thresholds:
    """The timing verdict's bounds for one challenge, fixed when it is issued (and kept in its evidence)."""

    expected_s: float
    fast_s: float
    slow_s: float
    deadline_s: float


def challenge_shape(profile: Profile) -> tuple[int, int, int]:
    """(m, n, k) for a profile: Hopper class gets m=n=8192, k=32768; smaller cards and the CPU less.

    The buffers (A, B: m*k and n*k bytes, C: 4*m*n bytes) stay far inside the card's memory.
    """
    if profile.arch == "cpu":
        return 256, 256, 1024
    rate = profile.rate_typical
    if rate >= 500e12 and profile.memory_gib >= 40:
        return 8192, 8192, 32768
    if rate >= 100e12:
        return 8192, 8192, 8192
    return 4096, 4096, 8192


def size_challenge(seed: bytes, profile: Profile, config: TimingConfig, spec: str = SPEC) -> ChallengeParams:
    """Parameters in `spec` whose expected time on the profile's typical rate is config.target_seconds.

    Both specs do the same int8 work per round (2mnk operations at the card's int8 rate), so the sizing is
    the same; every shape's k is inside v2's bound (k <= 131008).
    """
    m, n, k = challenge_shape(profile)
    assert k <= definition(spec).max_k
    per_round = ChallengeParams(seed, m, n, k, 1, spec).operations / profile.rate_typical
    rounds = max(1, min(config.max_rounds, round(config.target_seconds / per_round)))
    return ChallengeParams(seed, m, n, k, rounds, spec=spec)


def thresholds(params: ChallengeParams, profile: Profile, config: TimingConfig) -> Thresholds:
    """Expected time and the fast/slow/deadline bounds of a challenge on a claimed profile."""
    work = params.operations
    z = config.z
    slowest = work / profile.rate_low
    fastest = work / profile.rate_high
    slow_sd = math.hypot(slowest * config.compute_sigma, config.rtt_sigma_s)
    fast_sd = math.hypot(fastest * config.compute_sigma, config.rtt_sigma_s)
    slow_s = slowest + config.overhead_max_s + z * slow_sd
    fast_s = max(0.0, fastest - z * fast_sd)
    expected_s = work / profile.rate_typical
    deadline_s = max(config.deadline_floor_s, config.deadline_factor * slow_s) if profile.is_profiled \
        else max(config.deadline_floor_s, 100.0 * config.deadline_factor * expected_s)
    return Thresholds(expected_s=expected_s, fast_s=fast_s, slow_s=slow_s, deadline_s=deadline_s)


def honest_failure_probability(params: ChallengeParams, profile: Profile, config: TimingConfig,
                               eff: float | None = None, overhead_s: float | None = None) -> float:
    """P(an honest card at efficiency `eff` (default eff_low) is judged slower-than-claimed).

    The documented computation of the false-failure budget (docs/protocol.md).
    """
    eff = profile.eff_low if eff is None else eff
    overhead = config.overhead_max_s if overhead_s is None else overhead_s
    work = params.operations
    compute = work / (profile.int8_tops * 1e12 * eff)
    sd = math.hypot(compute * config.compute_sigma, config.rtt_sigma_s)
    mean = compute + overhead
    slow = thresholds(params, profile, config).slow_s
    return 1.0 - NormalDist(mean, sd).cdf(slow)


def classify(measured_s: float, limits: Thresholds, profile: Profile) -> Timing:
    """The timing class of a measured issue-to-commitment time (the RTT allowance already taken off)."""
    if measured_s > limits.deadline_s:
        return Timing.TIMEOUT
    if not profile.is_profiled:
        return Timing.UNPROFILED
    if measured_s > limits.slow_s:
        return Timing.SLOWER
    if measured_s < limits.fast_s:
        return Timing.FASTER
    return Timing.CONSISTENT


_RATE_UNITS = ((1e12, "TOPS"), (1e9, "GOPS"), (1e6, "MOPS"), (1e3, "kOPS"))


def format_rate(ops_per_s: float) -> str:
    """An integer-operation rate in the unit that fits, to three significant figures: "989 TOPS",
    "41.2 GOPS", "3.07 MOPS" (never "0.0 TOPS" for a small device). The one form every printed rate takes."""
    scale, unit = next(((s, u) for s, u in _RATE_UNITS if ops_per_s >= s * 0.9995),  # 999.96 GOPS reads
                       (1.0, "ops/s"))  # 1.00 TOPS, not 1000 GOPS
    value = ops_per_s / scale
    digits = 0 if value >= 99.95 else (1 if value >= 9.995 else 2)
    return f"{value:.{digits}f} {unit}"
