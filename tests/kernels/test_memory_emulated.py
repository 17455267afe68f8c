"""kernels/cuda/memory.cu compiled for the host (tests/support/memory_emu.py) against the NumPy reference
(kernels/memory.py): byte-identical pads, table, lane states and walk-tree leaves. No GPU needed."""

from __future__ import annotations

import numpy as np
import pytest
from gpuproof.kernels import cuda_memory, memory, merkle
from gpuproof.kernels.memory import MemoryPlan
from gpuproof.kernels.spec import ChallengeParams

from tests.support import cuda_emu, cupy_on_cpu, memory_emu

pytestmark = pytest.mark.skipif(memory_emu.compiler_reason() is not None, reason=str(memory_emu.compiler_reason()))


@pytest.fixture(scope="module")
def kern() -> memory_emu.MemoryEmuKernels:
    return memory_emu.MemoryEmuKernels()


@pytest.mark.parametrize(("leaves", "round_index"), [(1, 0), (3, 7), (9, 2**32 - 1)])
def test_table_pad_matches_the_reference(kern, leaves, round_index):
    rng = np.random.default_rng(leaves)
    seed = rng.bytes(32)
    c = rng.integers(0, 2**32, size=(leaves, 256), dtype=np.uint32)
    got = c.copy()
    pk = memory.pad_key(seed)
    kern.table_pad(got, cuda_memory.key_words(pk), round_index, leaves)
    want = np.stack([c[i] ^ memory.leaf_pad(pk, round_index, i) for i in range(leaves)])
    assert np.array_equal(got, want)


@pytest.mark.parametrize(("lanes", "first", "steps", "n_leaves"), [(1, 0, 1, 1), (8, 0, 5, 7), (13, 2**32 + 3, 9, 64)])
def test_walk_matches_the_reference(kern, lanes, first, steps, n_leaves):
    rng = np.random.default_rng(lanes * 1000 + steps)
    table = rng.integers(0, 2**32, size=(n_leaves, 256), dtype=np.uint32)
    wk = rng.bytes(32)
    plan = MemoryPlan(ChallengeParams(bytes(32), n_leaves, 256, 64, 1), 1, first + lanes, steps, 1)
    states = np.zeros((lanes, 4), dtype=np.uint32)
    leaf_hashes = np.zeros((lanes, 8), dtype=np.uint32)
    kern.walk(table, n_leaves, cuda_memory.key_words(wk), first, lanes, steps, states, leaf_hashes)
    want = memory.walk(plan, table, wk, np.arange(first, first + lanes, dtype=np.uint64))
    assert np.array_equal(states, want)
    assert leaf_hashes.tobytes() == merkle.hash_chunks(memory.state_bytes(want), memory.STATE_BYTES)


def test_a_whole_small_memory_phase_is_identical(kern):
    """Table built by the kernel from C rounds, walked by the kernel: the same walk root as play_local."""
    params = ChallengeParams(bytes(range(32)), 32, 512, 64, 4)
    plan = MemoryPlan(params, 3, 37, 12, 2)
    play = memory.play_local(plan, nonce=bytes(16), drawn=[0, 36])
    from gpuproof.kernels.reference import CpuBackend
    from gpuproof.kernels.spec import prev_root_of

    backend, parts = CpuBackend(), []
    for r in range(plan.first_round, params.rounds):
        c = backend.round_c(params, r, prev_root_of(play.roots, r))
        words = np.ascontiguousarray(c, dtype="<i4").view(np.uint32).reshape(-1, 256).copy()
        kern.table_pad(words, cuda_memory.key_words(memory.pad_key(params.seed)), r, params.leaves_per_round)
        parts.append(words)
    table = np.concatenate(parts)
    states = np.zeros((plan.lanes, 4), dtype=np.uint32)
    hashes = np.zeros((plan.lanes, 8), dtype=np.uint32)
    wk = memory.walk_key(params.seed, play.roots[-1], play.nonce)
    kern.walk(table, plan.table_leaves, cuda_memory.key_words(wk), 0, plan.lanes, plan.steps, states, hashes)
    assert merkle.root_of_hashes(hashes.tobytes()) == play.walk_root


@pytest.mark.skipif(cuda_emu.compiler_reason() is not None, reason=str(cuda_emu.compiler_reason()))
@pytest.mark.parametrize("shape", [(16, 256, 64, 3), (32, 512, 128, 2)])
def test_the_cuda_prover_gives_the_references_walk_root_and_lane_openings(kern, monkeypatch, shape):
    """kernels.cuda_memory.CudaMemoryProver (what the agent plays the memory phase with on a GPU) over CuPy's
    stand-in (tests/support/cupy_on_cpu.py) and memory.cu compiled for the host: the table on the "device",
    the walk tree built by gpuproof.cu's merkle_levels, openings cut on the host, byte for byte the NumPy
    reference's (kernels.memory.MemoryProver)."""
    from gpuproof.kernels.reference import CpuBackend
    from gpuproof.verifier.memory import plan_memory
    from gpuproof.verifier.profiles import load_profiles

    params = ChallengeParams(bytes(range(32)), *shape, spec="gpuproof/2")
    plan = plan_memory(params, load_profiles()["h200"])
    roots = CpuBackend().run(params)
    reference = memory.prover_for(CpuBackend(), plan, roots)
    wk = memory.walk_key(params.seed, roots[-1], bytes(range(16)))
    want_root = reference.run_walk(wk)
    with cupy_on_cpu.installed(monkeypatch):
        from gpuproof.kernels.cuda_backend import CudaBackend
        from gpuproof.kernels.cuda_memory import CudaMemoryProver

        prover = CudaMemoryProver(CudaBackend(), plan, roots, kernels=kern)  # the table from the roots
        assert prover.run_walk(wk) == want_root
        for lane in (0, plan.lanes - 1, 5):
            assert prover.open(lane, wk) == reference.open(lane, wk)
        got_roots, filled = CudaMemoryProver.run(CudaBackend(), plan, kernels=kern)  # filled as rounds come
        assert got_roots == roots and filled.run_walk(wk) == want_root
        assert filled.open(3, wk) == reference.open(3, wk)
    host_roots, host = memory.run_with_table(CpuBackend(), plan)
    assert host_roots == roots and host.run_walk(wk) == want_root and host.open(7, wk) == reference.open(7, wk)
