"""bench/memory_device.py (the v2 memory section of bench/device_check.py) runs end to end on CuPy's CPU
stand-in (tests/support/cupy_on_cpu.py) over memory.cu compiled for the host: the identity checks pass
and the timing code runs (its figures mean nothing here). A GPU session's minutes are not for Python errors."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from tests.support import cupy_on_cpu, memory_emu
from tests.support.server import ROOT

pytestmark = pytest.mark.skipif(memory_emu.compiler_reason() is not None, reason=str(memory_emu.compiler_reason()))


class _RawModule:
    """cupy_on_cpu's RawModule, also for kernels/cuda/memory.cu (built by tests/support/memory_emu.py)."""

    def __init__(self, code: str, options: tuple[str, ...] = ()) -> None:
        self.lib = memory_emu.library()

    def get_function(self, name: str) -> cupy_on_cpu.Kernel:
        return cupy_on_cpu.Kernel(self.lib, name)


@pytest.fixture
def fake_cupy(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    with cupy_on_cpu.installed(monkeypatch):
        monkeypatch.setattr(sys.modules["cupy"], "RawModule", _RawModule)
        monkeypatch.setattr(sys.modules["cupy"], "uint32", np.uint32, raising=False)
        sys.modules.pop("memory_device", None)
        yield
        sys.modules.pop("memory_device", None)


def test_memory_identity_and_timings_run(fake_cupy):
    import memory_device

    rng = np.random.default_rng(3)
    checks = memory_device.identity(rng)
    assert checks and all(c.ok for c in checks), [c for c in checks if not c.ok]
    out = memory_device.timings(rng, table_gib=2**-10, copy_gib=2**-10, lane_counts=(8, 24), steps=3, fill_leaves=4)
    for key in ("copy_gbps", "fill_gbps", "best_walk_gbps", "walk_vs_copy_read"):
        assert out[key] > 0, key
