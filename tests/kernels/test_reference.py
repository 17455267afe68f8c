"""The NumPy reference against the spec vectors and against independent int64 arithmetic."""

from __future__ import annotations

import numpy as np
import pytest
from gpuproof.kernels import merkle, reference
from gpuproof.kernels.spec import SPEC_V1, SPEC_V2, ChallengeParams, a_key, b_key, definition, key_words
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import load_vectors

SPEC = load_vectors("spec_v1.json")
VECTORS = SPEC["challenges"]


def params_of(v: dict) -> ChallengeParams:
    return ChallengeParams(bytes.fromhex(v["seed"]), v["m"], v["n"], v["k"], v["rounds"])


def naive_nibbles(key16: bytes, count: int) -> np.ndarray:
    """Spec v1 step 1 read literally: raw words, little-endian bytes, low nibble first, minus 8."""
    gen = np.random.Philox(key=np.array(key_words(key16), dtype=np.uint64))
    out = []
    for word in gen.random_raw(count // 16):
        for byte in int(word).to_bytes(8, "little"):
            out += [(byte & 15) - 8, (byte >> 4) - 8]
    return np.array(out, dtype=np.int8)


def test_philox_raw_word_vector():
    case = SPEC["philox"][0]
    gen = np.random.Philox(key=np.array(case["key_words"], dtype=np.uint64))
    assert [f"{w:016x}" for w in gen.random_raw(3)] == case["first_raw_words"]


def test_b_first_values_vector():
    v1 = VECTORS[0]
    b = reference.b_matrix(params_of(v1))
    assert b[0, :8].tolist() == v1["b_row0_first8"]


@pytest.mark.parametrize("v", VECTORS, ids=lambda v: v["desc"])
def test_spec_vector_roots(v):
    assert [r.hex() for r in reference.CpuBackend().run(params_of(v))] == v["roots"]


def test_nibbles_match_literal_reading_of_the_spec():
    key = bytes(range(16))
    want = naive_nibbles(key, 64 * 40)
    assert np.array_equal(reference.nibble_values(key, 64 * 40), want)
    assert want.min() == -8 and want.max() == 7


@settings(max_examples=30, deadline=None)
@given(st.binary(min_size=16, max_size=16), st.sampled_from([64, 128, 192, 320]), st.integers(0, 40),
       st.integers(1, 9))
def test_any_block_of_rows_equals_slice_of_whole_matrix(key, k, offset, rows):
    whole = reference.nibble_matrix(key, offset + rows, k)
    assert np.array_equal(reference.nibble_matrix(key, rows, k, row_offset=offset), whole[offset:])


def test_generation_in_pieces_matches_one_piece(monkeypatch):
    key = b"\x07" * 16
    one = reference.nibble_values(key, 64 * 1000)
    monkeypatch.setattr(reference, "_GEN_STEP_VALUES", 64 * 7)
    assert np.array_equal(reference.nibble_values(key, 64 * 1000), one)


@pytest.mark.parametrize(("spec", "k"), [(SPEC_V1, 64), (SPEC_V1, 1024), (SPEC_V1, 2**18), (SPEC_V1, 2**18 + 64),
                                       (SPEC_V2, 64), (SPEC_V2, 1024), (SPEC_V2, 1088), (SPEC_V2, 131008)])
def test_float_matmul_is_exact_even_at_worst_case(spec, k):
    """All-lowest rows give the largest partial sums (64 per term in v1, 2**14 in v2); float32 must hold,
    then float64 take over; at v2's largest k the sum is the largest exact int32 the bound allows."""
    d = definition(spec)
    rng = np.random.default_rng(k)
    a = rng.integers(d.low, d.high + 1, size=(3, k), dtype=np.int8)
    b = rng.integers(d.low, d.high + 1, size=(5, k), dtype=np.int8)
    a[0] = d.low
    b[0] = d.low
    got = reference.matmul_exact(a, reference.as_exact_float(b, spec))
    chunked = reference.matmul_exact_chunked(a, b.astype(np.float32), reference.exact_chunk(spec))
    want = a.astype(np.int64) @ b.astype(np.int64).T
    assert got.dtype == np.int32 and chunked.dtype == np.int32
    assert np.array_equal(got, want) and np.array_equal(chunked, want)
    assert got[0, 0] == d.max_abs_product * k <= 2**31 - 1


def test_the_chunked_product_breaks_without_its_chunks():
    """Full-range values over a long k: one float32 product rounds (its partial sums pass 2**24), the
    chunked one is exact (the reason for the chunks)."""
    k = 65536
    rng = np.random.default_rng(17)
    a = rng.integers(100, 128, size=(2, k), dtype=np.int8)
    b = rng.integers(100, 128, size=(3, k), dtype=np.int8)
    want = a.astype(np.int64) @ b.astype(np.int64).T
    assert np.array_equal(reference.matmul_exact_chunked(a, b.astype(np.float32), reference.exact_chunk(SPEC_V2)), want)
    assert not np.array_equal(reference.matmul_exact_chunked(a, b.astype(np.float32), k), want)


def test_round_root_from_independent_pieces():
    """root_0 of V2 rebuilt from int64 matmul, hashlib leaves and the oracle tree shape."""
    v2 = VECTORS[1]
    p = params_of(v2)
    a = reference.nibble_matrix(a_key(p.seed, 0, bytes(32)), p.m, p.k).astype(np.int64)
    b = reference.nibble_matrix(b_key(p.seed), p.n, p.k).astype(np.int64)
    c = (a @ b.T).astype("<i4").tobytes()
    leaves = [c[i:i + 1024] for i in range(0, len(c), 1024)]
    assert merkle.MerkleTree.from_leaves(leaves).root.hex() == v2["roots"][0]


def test_open_returns_committed_row_and_path():
    v2 = VECTORS[1]
    p = params_of(v2)
    backend = reference.CpuBackend()
    roots = backend.run(p)
    values, path = backend.open(p, 2, 37, roots)
    again, path_again = backend.open(p, 2, 37)  # recomputing rounds 0..2 gives the same opening
    assert np.array_equal(values, again) and path == path_again
    merkle.verify_inclusion(37, p.m, reference.row_root(values), path, roots[2])


# ---- spec gpuproof/2 ---------------------------------------------------------------------------------
SPEC2 = load_vectors("spec_v2.json")
VECTORS2 = SPEC2["challenges"]


def naive_bytes(key16: bytes, count: int) -> np.ndarray:
    """Spec v2 step 1 read literally: raw words, little-endian bytes, each a two's-complement int8."""
    gen = np.random.Philox(key=np.array(key_words(key16), dtype=np.uint64))
    out = []
    for word in gen.random_raw(count // 8):
        out += [b - 256 if b >= 128 else b for b in int(word).to_bytes(8, "little")]
    return np.array(out, dtype=np.int8)


def test_v2_philox_vector():
    case = SPEC2["philox"][0]
    key = np.array(case["key_words"], dtype="<u8").tobytes()
    assert reference.byte_values(key, 16).tolist() == case["first_values16"]


@pytest.mark.parametrize("v", VECTORS2, ids=lambda v: v["desc"])
def test_v2_spec_vectors(v):
    p = ChallengeParams.from_json(v)
    assert p.spec == SPEC_V2
    assert reference.b_matrix(p)[0, :8].tolist() == v["b_row0_first8"]
    a0 = reference.a_matrix(p, 0, bytes(32), rows=1)
    assert reference.matmul_exact(a0, reference.as_exact_float(reference.b_matrix(p, 4), SPEC_V2))[0].tolist() \
        == v["c0_row0_first4"]
    backend = reference.CpuBackend()
    roots = backend.run(p)
    assert [r.hex() for r in roots] == v["roots"]
    values, path = backend.open(p, p.rounds - 1, p.m - 1, roots)
    merkle.verify_inclusion(p.m - 1, p.m, reference.row_root(values), path, roots[-1])


def test_v2_values_match_literal_reading_of_the_spec_and_cover_the_int8_range():
    key = bytes(range(16))
    want = naive_bytes(key, 32 * 400)
    assert np.array_equal(reference.byte_values(key, 32 * 400), want)
    assert want.min() == -128 and want.max() == 127


@settings(max_examples=30, deadline=None)
@given(st.binary(min_size=16, max_size=16), st.sampled_from([64, 128, 192, 320]), st.integers(0, 40),
       st.integers(1, 9))
def test_v2_any_block_of_rows_equals_slice_of_whole_matrix(key, k, offset, rows):
    whole = reference.byte_matrix(key, offset + rows, k)
    assert np.array_equal(reference.byte_matrix(key, rows, k, row_offset=offset), whole[offset:])


def test_v2_generation_in_pieces_matches_one_piece(monkeypatch):
    key = b"\x09" * 16
    one = reference.byte_values(key, 32 * 1000)
    monkeypatch.setattr(reference, "_GEN_STEP_VALUES", 32 * 7)
    assert np.array_equal(reference.byte_values(key, 32 * 1000), one)


def test_v1_and_v2_of_one_seed_share_nothing():
    """Different domain strings and value streams: no matrix or root of one spec is the other's."""
    p1 = ChallengeParams(bytes(32), 256, 256, 64, 2)
    p2 = ChallengeParams(bytes(32), 256, 256, 64, 2, SPEC_V2)
    assert not np.array_equal(reference.b_matrix(p1), reference.b_matrix(p2))
    assert set(reference.CpuBackend().run(p1)).isdisjoint(reference.CpuBackend().run(p2))


def test_v2_vectors_are_what_the_independent_implementation_makes():
    """tests/vectors/spec_v2.json is the output of tests/support/spec_v2_oracle.py, written from the docs
    with no gpuproof code (its own Philox, checked here against spec v1's raw-word vector)."""
    import inspect

    from tests.support import spec_v2_oracle

    imports = [line for line in inspect.getsource(spec_v2_oracle).splitlines() if line.startswith(("import", "from"))]
    assert imports and not any("gpuproof" in line for line in imports)
    assert SPEC2["philox"][0]["first_raw_words"] == SPEC["philox"][0]["first_raw_words"]
    assert spec_v2_oracle.document() == SPEC2
