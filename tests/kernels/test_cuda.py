"""CUDA kernels byte for byte against the NumPy reference (skipped, with the reason, without a GPU)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import load_vectors

pytestmark = pytest.mark.gpu

NAMES = ["philox", "round_key", "leaf_hashes", "levels", "gemm", "challenges"]


@pytest.mark.parametrize("name", NAMES)
def test_kernel_is_bit_identical_to_reference(name):
    from gpuproof.kernels.cuda_identity import ALL_CHECKS

    rng = np.random.default_rng(20261126)
    vectors = load_vectors("spec_v1.json")["challenges"] + load_vectors("spec_v2.json")["challenges"]
    kwargs = {"vectors": vectors} if name == "challenges" else {}
    results = list(ALL_CHECKS[name](rng, **kwargs))
    assert results
    failed = [f"{c.name}: {c.detail}" for c in results if not c.ok]
    assert not failed, "\n".join(failed)


def test_auto_backend_picks_cuda_on_a_gpu():
    from gpuproof.kernels.backend import select_backend

    assert select_backend("auto").name == "cuda"
