"""How slow this machine is right now, so that timed tests take their limits from it, not from constants.

A test that waits for something (a server to come up, a sweep to run, a request to be answered) or gives
an honest party a time budget must not fail because the machine is slower or busier than the one its
limits were tuned on (CI: 2 shared cores, other jobs alongside), and must still end when something hangs.
So every such limit is written as its value on the quiet reference machine and passed through `scaled`:

    deadline = time.monotonic() + scaled(10)

`slowness()` times a fixed piece of the product's own work, once per test process (cached): a 4-round
challenge of the cpu-reference profile's shape (256 x 256 x 1024, verifier.timing.challenge_shape) on the
NumPy reference backend, which is Philox generation, a BLAS product and SHA-256 Merkle hashing, the mix
of work an honest CPU provider and the gateway do in these tests. BLAS runs on one thread for it: a
single thread's wall time against its CPU time is what a busy machine takes from a test (OpenBLAS's own
threads spinning against other processes would add noise, not information). The median of SAMPLES
runs after one warm-up round, over NOMINAL_S, is the slowness factor; it is never below 1 (the
constants already pass on the reference machine) and never above MAX_SLOWNESS (a hung test still ends,
at worst MAX_SLOWNESS times later). GPUPROOF_TEST_SLOWNESS=F overrides the measurement (a CI runner that
knows it is slow, or to try a limit by hand).

Only the failure direction is scaled: a limit that an honest run must stay under, or a wait before
giving up. Limits that a cheat must fail (a too-fast burst, a slower-than-claimed card) keep their
protocol values; where an honest party's budget comes from the product's own timing rules (a challenge's
slow bound), tests size the challenge with `honest_test_shape` so that the product's rule itself
leaves room for this machine.
"""

from __future__ import annotations

import functools
import math
import os
import statistics
import time

# The piece's time on the reference machine, the 2-core x86-64 VM the suite and CI run on, with nothing
# else running: its CPU time there (time.thread_time, which a busy machine does not inflate) is 3.8 ms a
# round, 15 ms for the 4 rounds. A machine on which it takes twice as long gets limits twice as long.
NOMINAL_S = 0.015
ROUNDS = 4
SAMPLES = 5
MAX_SLOWNESS = 20.0
ENV = "GPUPROOF_TEST_SLOWNESS"
TEST_SHAPE = "16,256,64,3"  # the tests' usual challenges (tests/support/server.py, tests/gateway/conftest.py)


def measure() -> float:
    """Median wall seconds of a 4-round cpu-reference challenge (256 x 256 x 1024) on CpuBackend with
    one BLAS thread, after a warm-up round."""
    from gpuproof.kernels.reference import CpuBackend
    from gpuproof.kernels.spec import SPEC, ChallengeParams
    from gpuproof.verifier.profiles import load_profiles
    from gpuproof.verifier.timing import challenge_shape
    from threadpoolctl import threadpool_limits

    m, n, k = challenge_shape(load_profiles()["cpu-reference"])
    params = ChallengeParams(bytes(32), m, n, k, ROUNDS, spec=SPEC)
    times = []
    with threadpool_limits(1):
        CpuBackend().warm_up([(m, n, k)])
        for _ in range(SAMPLES):
            started = time.perf_counter()
            CpuBackend().run(params)  # a fresh backend: B is regenerated each time, as for a new challenge
            times.append(time.perf_counter() - started)
    return statistics.median(times)


@functools.cache
def slowness() -> float:
    """How many times slower than the reference machine this one is now, in [1, MAX_SLOWNESS]."""
    forced = os.environ.get(ENV)
    factor = float(forced) if forced else measure() / NOMINAL_S
    if not math.isfinite(factor):
        raise ValueError(f"{ENV} must be a finite number, got {forced!r}")
    return min(MAX_SLOWNESS, max(1.0, factor))


def scaled(seconds: float) -> float:
    """`seconds` on the reference machine, as a limit on this one (seconds x slowness())."""
    return seconds * slowness()


def honest_test_shape(honest_budget_s: float, default: str = TEST_SHAPE) -> str:
    """A GPUPROOF_VERIFY_TEST_SHAPE: `default` for every profile, and for cpu-reference devices
    challenges whose slow bound (verifier.timing.thresholds) leaves an honest provider at least
    `scaled(honest_budget_s)` beyond the profile's fixed overhead allowance (overhead_max_s, 0.25 s): the
    time it may spend on HTTP, queueing and a busy CPU before the product judges it slower-than-claimed.

    The product's own rule does the scaling: its bound is work / rate_low (cpu-reference's eff_low), so
    the rounds are chosen to make that at least the budget. The shape is 1024 x 1024 x 1024, where the
    reference backend's work is mostly one BLAS product: a round costs an honest CPU ~50 ms of CPU time
    against the 0.86 s rate_low allows it (17x), so an honest run fits on any machine less than ~17x
    slow; beyond that the profile itself would call an honest CPU slow (its band's lower edge).
    """
    m, n, k, rounds = honest_cpu_shape(honest_budget_s)
    return f"{default};cpu-reference={m},{n},{k},{rounds}"


def honest_cpu_shape(honest_budget_s: float) -> tuple[int, int, int, int]:
    """(m, n, k, rounds) of the cpu-reference challenges of `honest_test_shape` (for `challenge local`)."""
    from gpuproof.verifier.profiles import load_profiles

    rate_low = load_profiles()["cpu-reference"].rate_low
    m = n = k = 1024
    rounds = max(1, math.ceil(scaled(honest_budget_s) * rate_low / (2.0 * m * n * k)))
    return m, n, k, rounds
