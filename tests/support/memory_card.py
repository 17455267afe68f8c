"""A profile for tests of spec v2's memory phase on a CPU: a card ("test-card", arch test-gpu, so it has a
memory phase) whose compute band an honest CPU passes (it is faster than claimed, which passes) and whose
walk band's slow edge is `walk_slow_s` for the 64 lanes x 64 steps a test shape's plan gets."""

from __future__ import annotations

from gpuproof.kernels.spec import CHUNK_BYTES
from gpuproof.verifier.memory import MemoryConfig

WALK_EFF_LOW = 0.05


def profile_toml(walk_slow_s: float) -> str:
    """The TOML of the profile (GPUPROOF_PROFILES_FILE), with the walk's slowest honest time `walk_slow_s`."""
    config = MemoryConfig()
    walk_bytes = config.opened * config.steps * CHUNK_BYTES
    bandwidth_gbs = walk_bytes / (walk_slow_s * WALK_EFF_LOW) / 1e9
    return f"""
[profiles.test-card]
name = "a card for the memory phase's tests"
aliases = ["test card"]
int8_tops = 1e-6
memory_gib = 0.001
bandwidth_gbs = {bandwidth_gbs!r}
eff_low = 0.05
eff_high = 20.0
walk_eff_low = {WALK_EFF_LOW!r}
walk_eff_high = 20.0
measured = true
arch = "test-gpu"
"""
