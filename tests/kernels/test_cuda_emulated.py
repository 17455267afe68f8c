"""The CUDA kernels' source, compiled for the host (tests/support/cuda_emu.py), against the NumPy reference.

No GPU needed: this runs the very source kernels/cuda_backend.py loads, with the same grids and launch
plans, on CPU threads. Independent sources: hashlib, kernels.reference (normative), RFC 6962 trees from
kernels.merkle, the spec v1 and v2 vectors (v2's made by an implementation that shares no code with gpuproof).
"""

from __future__ import annotations

import hashlib
import random

import numpy as np
import pytest
from gpuproof.kernels import cuda_plan, merkle, reference, spec
from gpuproof.kernels.cuda_plan import Gemm, Gen, Geometry, Leaves, Levels, Record, Wait
from gpuproof.kernels.spec import ChallengeParams
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import load_vectors
from tests.support import cuda_emu

pytestmark = pytest.mark.skipif(cuda_emu.compiler_reason() is not None, reason=str(cuda_emu.compiler_reason()))


@pytest.fixture(scope="module")
def kern() -> cuda_emu.EmuKernels:
    return cuda_emu.EmuKernels()


@pytest.mark.parametrize("version", [spec.SPEC_V1, spec.SPEC_V2])
def test_round_key_matches_the_spec(kern, version):
    rng = np.random.default_rng(1)
    for r in [0, 1, 7, 2**31 + 5, 2**32 - 1]:
        seed, prev = rng.bytes(32), (bytes(32) if r == 0 else rng.bytes(32))
        key = np.zeros(2, dtype=np.uint64)
        kern.round_key(np.frombuffer(seed, np.uint8).copy(), r, np.frombuffer(prev, np.uint8).copy(), key, version)
        assert key.tolist() == list(spec.key_words(spec.a_key(seed, r, prev, version)))


def test_philox_spec_vector(kern):
    vec = load_vectors("spec_v1.json")["philox"][0]
    out = np.zeros(64 * 4, dtype=np.int8)
    kern.gen(out, np.array(vec["key_words"], dtype=np.uint64))
    want_words = [int(w, 16) for w in vec["first_raw_words"]]
    # the first three raw words, as the nibble values the spec derives from them (low nibble first)
    want = [((w >> (4 * i)) & 15) - 8 for w in want_words for i in range(16)]
    assert out[:48].tolist() == want


def test_v2_philox_spec_vector(kern):
    vec = load_vectors("spec_v2.json")["philox"][0]
    out = np.zeros(32 * 4, dtype=np.int8)
    kern.gen(out, np.array(vec["key_words"], dtype=np.uint64), spec=spec.SPEC_V2)
    want_words = [int(w, 16) for w in vec["first_raw_words"]]
    # the first three raw words' little-endian bytes, each a two's-complement value
    want = [b - 256 if b >= 128 else b for w in want_words for b in w.to_bytes(8, "little")]
    assert out[:24].tolist() == want
    assert out[:16].tolist() == vec["first_values16"]


@pytest.mark.parametrize("version", [spec.SPEC_V1, spec.SPEC_V2])
@pytest.mark.parametrize(("rows", "k", "offset"), [(1, 64, 0), (3, 192, 5), (17, 640, 1000), (256, 1024, 3),
                                                   (1, 32768, 777), (40, 4096, 123456), (300, 64, 7)])
def test_gen_matches_the_reference_at_any_row_offset(kern, rows, k, offset, version):
    key16 = random.Random(rows * k + offset).randbytes(16)
    out = np.zeros((rows, k), dtype=np.int8)
    kern.gen(out, np.array(spec.key_words(key16), dtype=np.uint64),
             offset * k // spec.definition(version).values_per_block, spec=version)
    assert np.array_equal(out, reference.value_matrix(version, key16, rows, k, row_offset=offset))


@pytest.mark.parametrize("chunks", [1, 31, 32, 33, 127, 128, 129, 1000])
def test_leaf_hashes_match_hashlib(kern, chunks):
    data = np.frombuffer(random.Random(chunks).randbytes(1024 * chunks), np.uint8).copy()
    out = np.zeros(32 * chunks, dtype=np.uint8)
    kern.leaf_hashes(data, chunks, out)
    assert out.tobytes() == b"".join(hashlib.sha256(b"\0" + data[i * 1024:(i + 1) * 1024].tobytes()).digest()
                                     for i in range(chunks))


@pytest.mark.parametrize("leaves", [1, 2, 3, 5, 255, 256, 300, 511, 512, 513, 1000, 4097])
@pytest.mark.parametrize("per_launch", [6, 9, 1])
def test_levels_match_rfc6962(kern, leaves, per_launch):
    hashes = random.Random(leaves).randbytes(32 * leaves)
    sizes, offsets = merkle.level_layout(leaves)
    buf = np.zeros(sum(sizes) * 32, dtype=np.uint8)
    buf[: 32 * leaves] = np.frombuffer(hashes, np.uint8)
    root = np.zeros(32, dtype=np.uint8)
    height = len(sizes) - 1
    steps = cuda_plan.tree_steps(0, leaves, 0, 0, leaves, height, per_launch, root=True)
    for step in steps:
        kern.levels(buf, leaves, step, root)
    tree = merkle.MerkleTree(hashes)
    assert buf.tobytes() == b"".join(tree.level(h) for h in range(len(sizes)))
    assert buf[offsets[-1] * 32:].tobytes() == tree.root
    if height:
        assert root.tobytes() == tree.root


def test_levels_over_a_piece_leave_the_rest_of_the_level_alone(kern):
    """A range launch writes the piece's subtree and nothing else; pieces together equal the whole."""
    leaves, span = 3000, 1024
    hashes = random.Random(5).randbytes(32 * leaves)
    sizes, offsets = merkle.level_layout(leaves)
    buf = np.zeros(sum(sizes) * 32, dtype=np.uint8)
    buf[: 32 * leaves] = np.frombuffer(hashes, np.uint8)
    for step in cuda_plan.tree_steps(1, leaves, 0, span, 2 * span, 10, 6, root=False):
        kern.levels(buf, leaves, step, None)
    tree = merkle.MerkleTree(hashes)
    for h in range(1, 11):
        level = np.frombuffer(tree.level(h), np.uint8).reshape(-1, 32)
        got = buf[offsets[h] * 32:(offsets[h] + sizes[h]) * 32].reshape(-1, 32)
        lo, hi = span >> h, (2 * span) >> h
        assert np.array_equal(got[lo:hi], level[lo:hi]), h
        assert not got[:lo].any() and not got[hi:].any(), h


VECTORS = load_vectors("spec_v1.json")["challenges"] + load_vectors("spec_v2.json")["challenges"]


@pytest.mark.parametrize("vector", VECTORS, ids=[v["desc"] for v in VECTORS])
@pytest.mark.parametrize("pieces", [1, 4])
def test_spec_vectors_through_the_launch_plans(vector, pieces):
    params = ChallengeParams.from_json(vector)  # v2's vectors name their spec; v1's name none
    got = cuda_emu.EmuBackend(pieces, order_seed=pieces).run(params)
    assert [r.hex() for r in got] == vector["roots"]


@pytest.mark.parametrize(("m", "n", "k", "rounds", "pieces", "per_launch", "version"), [
    (8, 256, 64, 3, 1, 6, spec.SPEC_V1), (100, 512, 192, 2, 1, 9, spec.SPEC_V1), (37, 2048, 128, 2, 1, 6, spec.SPEC_V1),
    (100, 8192, 128, 2, 4, 6, spec.SPEC_V1), (130, 1024, 64, 2, 3, 9, spec.SPEC_V1),
    (64, 2048, 64, 3, 8, 6, spec.SPEC_V1), (33, 4096, 64, 2, 2, 1, spec.SPEC_V1),
    (8, 256, 64, 3, 1, 6, spec.SPEC_V2), (37, 2048, 128, 2, 1, 9, spec.SPEC_V2),
    (100, 8192, 128, 2, 4, 6, spec.SPEC_V2), (130, 1024, 64, 2, 3, 9, spec.SPEC_V2),
])
def test_challenges_through_the_launch_plans_match_the_cpu_backend(m, n, k, rounds, pieces, per_launch, version):
    params = ChallengeParams(random.Random(m * n).randbytes(32), m, n, k, rounds, version)
    want = reference.CpuBackend().run(params)
    for order_seed in range(2 if pieces > 1 else 1):
        assert cuda_emu.EmuBackend(pieces, per_launch, order_seed).run(params) == want


def test_a_plan_without_its_waits_is_caught():
    """The random schedule is adversarial enough: drop the hashing stream's waits and the roots go wrong."""
    params = ChallengeParams(bytes(range(32)), 64, 2048, 64, 2)
    want = reference.CpuBackend().run(params)
    real = cuda_plan.round_plan

    def without_waits(*args, **kwargs):
        return [s for s in real(*args, **kwargs) if not isinstance(s, Wait)]

    wrong = 0
    try:
        cuda_plan.round_plan = without_waits
        for order_seed in range(6):
            wrong += cuda_emu.EmuBackend(4, order_seed=order_seed).run(params) != want
    finally:
        cuda_plan.round_plan = real
    assert wrong >= 3


def tiles(spans: list[tuple[int, int]], lo: int, hi: int) -> bool:
    """The half-open spans, in order, cover [lo, hi) with no gap and no overlap."""
    return bool(spans) and spans[0][0] == lo and spans[-1][1] == hi and all(
        a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))


geometries = st.builds(lambda m, log_cpr, pieces: (Geometry(m, -(-m // 16) * 16, 1 << log_cpr), pieces),
                       st.integers(1, 5000), st.integers(0, 7), st.integers(1, 16))


@settings(max_examples=300, deadline=None)
@given(geometries, st.sampled_from([1, 5, 6, 9]))
def test_plans_cover_everything_once_with_aligned_ranges(case, per_launch):
    geo, pieces = case
    plan = cuda_plan.round_plan(geo, pieces, 16, per_launch)
    rows = [(s.r0, s.r1) for s in plan if isinstance(s, Gemm)]
    assert rows == [(s.r0, s.r1) for s in plan if isinstance(s, Gen)]
    assert tiles(rows, 0, geo.m_pad)
    assert all(r0 % 16 == 0 for r0, _ in rows)
    leaves = [(s.a, s.b) for s in plan if isinstance(s, Leaves)]
    assert tiles(leaves, 0, geo.leaves)
    sizes, _ = merkle.level_layout(geo.leaves)
    covered: dict[int, list[tuple[int, int]]] = {}
    for s in plan:
        if isinstance(s, Levels):
            assert 1 <= s.count <= min(per_launch, 9)
            assert s.first % (1 << s.count) == 0
            assert s.end % (1 << s.count) == 0 or s.end == sizes[s.start]
            assert s.end <= sizes[s.start]
            for h in range(s.start + 1, s.start + s.count + 1):
                covered.setdefault(h, []).append((s.first >> (h - s.start), -(-s.end // (1 << (h - s.start)))))
    for h in range(1, len(sizes)):  # every node of every level above the leaves is made exactly once
        assert tiles(sorted(covered[h]), 0, sizes[h]), h
    assert sum(s.root for s in plan if isinstance(s, Levels)) == (len(sizes) > 1)
    assert len([s for s in plan if isinstance(s, Record)]) == len([s for s in plan if isinstance(s, Wait)])


@pytest.mark.parametrize("defines", [("GP_LEAF_FMA=0",), ("GP_T1_FMA=1",), ("GP_NODE_FMA=1",), ("GP_GEN_SMEM=0",)],
                         ids=lambda d: ",".join(d))
def test_every_kernel_variant_gives_the_same_roots(defines):
    """The compile-time variants bench/kernel_variants.py times (PTX IMAD forms included) stay exact."""
    params = ChallengeParams(random.Random(7).randbytes(32), 50, 1024, 192, 2)
    assert cuda_emu.EmuBackend(2, order_seed=3, defines=defines).run(params) == reference.CpuBackend().run(params)
    kern = cuda_emu.EmuKernels(defines)
    data = np.frombuffer(random.Random(8).randbytes(1024 * 33), np.uint8).copy()
    out = np.zeros(32 * 33, dtype=np.uint8)
    kern.leaf_hashes(data, 33, out)
    assert out.tobytes() == merkle.hash_chunks(data.tobytes(), 1024)
