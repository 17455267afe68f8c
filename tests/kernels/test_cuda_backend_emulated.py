"""kernels/cuda_backend.py and the GPU identity checks, run over CuPy's stand-in (tests/support/cupy_on_cpu.py).

The backend's Python (buffers, offsets, kernel arguments, cuBLAS arguments, launch plans) otherwise runs
only where a GPU is lent. Here every check of kernels/cuda_identity.py, the one bench/device_check.py
runs first on a GPU, runs against the kernel source compiled for the host and an exact gemmEx.
"""

from __future__ import annotations

import numpy as np
import pytest
from gpuproof.kernels import reference
from gpuproof.kernels.spec import SPEC_V1, SPEC_V2, ChallengeParams

from tests.conftest import load_vectors
from tests.support import cuda_emu, cupy_on_cpu

pytestmark = pytest.mark.skipif(cuda_emu.compiler_reason() is not None, reason=str(cuda_emu.compiler_reason()))


@pytest.fixture
def fake_cupy(monkeypatch):
    with cupy_on_cpu.installed(monkeypatch):
        yield


@pytest.mark.parametrize("check", ["philox", "round_key", "leaf_hashes", "levels", "gemm", "challenges"])
def test_every_identity_check_passes_on_the_emulated_device(fake_cupy, check):
    from gpuproof.kernels.cuda_identity import ALL_CHECKS

    vectors = load_vectors("spec_v1.json")["challenges"] + load_vectors("spec_v2.json")["challenges"]
    kwargs = {"vectors": vectors} if check == "challenges" else {}
    results = list(ALL_CHECKS[check](np.random.default_rng(11), **kwargs))
    assert results
    assert [c for c in results if not c.ok] == []


def test_the_identity_checks_can_fail(fake_cupy, monkeypatch):
    """Launchers that are a little wrong (one chunk short, K one block short) are reported, not passed."""
    import gpuproof.kernels.cuda_backend as backend
    from gpuproof.kernels.cuda_identity import check_gemm, check_leaf_hashes

    leaf, gemm = backend.CudaKernels.leaf_hashes, backend.CudaKernels.gemm
    monkeypatch.setattr(backend.CudaKernels, "leaf_hashes",
                        lambda self, data, n, out: leaf(self, data, max(n - 1, 0), out))
    monkeypatch.setattr(backend.CudaKernels, "gemm",
                        lambda self, a, b, c: gemm(self, a[:, 64:], b[:, 64:], c))
    assert any(not c.ok for c in check_leaf_hashes(np.random.default_rng(3)))
    assert all(not c.ok for c in check_gemm(np.random.default_rng(4)) if "k=64 " not in c.name)


@pytest.mark.parametrize("version", [SPEC_V1, SPEC_V2])
@pytest.mark.parametrize("pieces", [1, 3, 4])
def test_backend_run_and_open_match_the_cpu_backend(fake_cupy, pieces, version):
    from gpuproof.kernels.cuda_backend import CudaBackend

    params = ChallengeParams(bytes(range(32)), 70, 2048, 128, 3, version)
    cpu = reference.CpuBackend()
    want = cpu.run(params)
    gpu = CudaBackend(0, pieces=pieces)
    assert gpu.run(params) == want
    values, path = gpu.open(params, 1, 69, want)
    cv, cp = cpu.open(params, 1, 69, want)
    assert np.array_equal(values, cv) and path == cp


def test_backend_refuses_bad_arguments(fake_cupy):
    from gpuproof.kernels.cuda_backend import CudaBackend
    from gpuproof.kernels.errors import BackendUnavailable

    with pytest.raises(BackendUnavailable, match="--device 3"):
        CudaBackend(3)
    with pytest.raises(ValueError, match="pieces"):
        CudaBackend(0, pieces=0)
    with pytest.raises(ValueError, match="levels per launch"):
        CudaBackend(0, per_launch=10)


def test_auto_picks_cuda_when_cupy_sees_a_gpu_and_names_the_reason_when_not(fake_cupy, monkeypatch):
    import cupy
    from gpuproof.kernels.backend import select_backend
    from gpuproof.kernels.errors import BackendUnavailable

    assert select_backend("auto").name == "cuda"
    with pytest.raises(BackendUnavailable, match="--device 1: this machine has 1 CUDA device"):
        select_backend("cuda", 1)
    monkeypatch.setattr(cupy, "is_available", lambda: False)
    assert select_backend("auto").name == "cpu"
    with pytest.raises(BackendUnavailable, match="sees no CUDA GPU"):
        select_backend("cuda")


def test_one_backend_answers_v1_and_v2_challenges_of_one_shape_and_seed(fake_cupy):
    """The buffers of a shape are kept across challenges; B is regenerated when the spec changes, even for
    the same seed (a v1 B left in place under a v2 challenge would give v1's products)."""
    from gpuproof.kernels.cuda_backend import CudaBackend

    gpu, cpu = CudaBackend(0), reference.CpuBackend()
    for version in (SPEC_V1, SPEC_V2, SPEC_V1):
        params = ChallengeParams(bytes(32), 40, 512, 64, 2, version)
        assert gpu.run(params) == cpu.run(params)
