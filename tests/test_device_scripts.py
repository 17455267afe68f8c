"""The GPU scripts' Python runs end to end on CuPy's CPU stand-in (tests/support/cupy_on_cpu.py).

A lent GPU gives a session 15 minutes; a script that dies of a Python error wastes them. These run
bench/device_check.py's timing code and bench/kernel_variants.py at a small size over the kernel source
compiled for the host (the timings themselves are meaningless here), and the GPU checkpoint root.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from tests.support import cuda_emu, cupy_on_cpu
from tests.support.server import ROOT

pytestmark = pytest.mark.skipif(cuda_emu.compiler_reason() is not None, reason=str(cuda_emu.compiler_reason()))


@pytest.fixture
def fake_cupy(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    with cupy_on_cpu.installed(monkeypatch):
        for name in ("device_check", "kernel_variants"):
            sys.modules.pop(name, None)
        yield
        for name in ("device_check", "kernel_variants"):
            sys.modules.pop(name, None)


def test_device_check_timings_run(fake_cupy):
    import device_check

    row = device_check.timings(64, 512, 128, np.random.default_rng(1))
    assert set(row["pipelined_round_s"]) == {str(p) for p in device_check.PIECES}
    assert row["best_pieces"] in device_check.PIECES
    for key in ("gemm_tops", "gen_gbps", "leaf_gbps", "round_fraction", "run_fraction", "run_best_fraction",
                "best_pieces_9_levels_fraction", "v2_gen_gbps", "v2_gemm_tops", "v2_round_fraction"):
        assert row[key] > 0, key


def test_kernel_variants_runs_and_every_variant_is_identical(fake_cupy, monkeypatch, tmp_path, capsys):
    import kernel_variants

    monkeypatch.setenv("OUT", str(tmp_path))
    assert kernel_variants.main(["--size", "256"]) == 0  # 0: every variant byte-identical
    assert (tmp_path / "kernel_variants.json").exists()
    assert "t1-fma | True" in capsys.readouterr().out


def test_checkpoint_root_on_the_device_equals_the_cpu_root(fake_cupy):
    from gpuproof.verifier import checkpoints

    rng = np.random.default_rng(5)
    state = {"w": rng.standard_normal((300, 7)).astype(np.float32), "b": rng.standard_normal(9).astype("<f2"),
             "big": rng.standard_normal(3000).astype(np.float64)}
    import cupy

    on_device = {k: cupy.asarray(v) for k, v in state.items()}
    on_device["view"] = cupy.asarray(rng.standard_normal(2000).astype(np.float32))[3:1500]  # not 16-byte aligned
    state["view"] = np.asarray(on_device["view"]).copy()
    assert checkpoints.root_on_gpu(on_device)[0] == checkpoints.root_cpu(state)[0]
