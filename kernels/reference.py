"""The normative NumPy reference of specs gpuproof/1 and gpuproof/2 (docs/protocol.md).

Any other backend (CUDA) must produce byte-identical value matrices, leaf hashes and roots; the tests
hold it to that. This module favours obvious correctness, then speed on a small CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from gpuproof.kernels import merkle
from gpuproof.kernels.spec import (
    CHUNK_BYTES,
    SPEC_V1,
    SPEC_V2,
    ChallengeParams,
    a_key,
    b_key,
    definition,
    key_words,
    prev_root_of,
)

_WORDS_PER_BLOCK = 4
_VALUES_PER_WORD = 16
_VALUES_PER_BLOCK = _WORDS_PER_BLOCK * _VALUES_PER_WORD  # 64: why spec v1 needs k % 64 == 0
_V2_VALUES_PER_WORD = 8
_V2_VALUES_PER_BLOCK = _WORDS_PER_BLOCK * _V2_VALUES_PER_WORD  # 32
_GEN_STEP_VALUES = 1 << 24  # generate in pieces of 16M values to bound temporary memory
# The warm-up round of CpuBackend: the cpu-reference profile's whole shape (256 x 256 x 1024), and no more
# of a larger claimed shape: the CPU keeps no per-shape buffers, so a bigger round would only cost time.
WARM_MAX_SHAPE = (256, 1024, 1024)


def _nibble_pair_table() -> np.ndarray:
    """Byte b -> the two int8 values (low nibble - 8, high nibble - 8), packed as one little-endian u16."""
    b = np.arange(256, dtype=np.int32)
    lo = ((b & 15) - 8) & 0xFF
    hi = ((b >> 4) - 8) & 0xFF
    return (lo | (hi << 8)).astype("<u2")


_PAIRS = _nibble_pair_table()


def nibble_values(key16: bytes, count: int, value_offset: int = 0) -> np.ndarray:
    """`count` values of the nibble stream of `key16`, starting at value `value_offset` (spec v1 step 1).

    Precondition: `value_offset` is a multiple of 64 (a Philox block), `count` a multiple of 16.
    """
    if value_offset % _VALUES_PER_BLOCK or count % _VALUES_PER_WORD or count < 0:
        raise ValueError(f"offset {value_offset} must be a multiple of 64 and count {count} of 16")
    out = np.empty(count, dtype=np.int8)
    gen = np.random.Philox(key=np.array(key_words(key16), dtype=np.uint64))
    gen.advance(value_offset // _VALUES_PER_BLOCK)
    for start in range(0, count, _GEN_STEP_VALUES):
        piece = min(_GEN_STEP_VALUES, count - start)
        words = gen.random_raw(piece // _VALUES_PER_WORD).astype("<u8", copy=False)
        out[start:start + piece] = _PAIRS[words.view(np.uint8)].view(np.int8)
    return out


def nibble_matrix(key16: bytes, rows: int, k: int, row_offset: int = 0) -> np.ndarray:
    """Rows `row_offset .. row_offset+rows-1` of the rows x k nibble matrix of `key16` (int8, C order).

    Row i starts at Philox block i*k/64, so any block of rows is made without the ones before it.
    """
    if k % _VALUES_PER_BLOCK:
        raise ValueError(f"k must be a multiple of 64, got {k}")
    return nibble_values(key16, rows * k, row_offset * k).reshape(rows, k)


def byte_values(key16: bytes, count: int, value_offset: int = 0) -> np.ndarray:
    """`count` values of the byte stream of `key16` from value `value_offset` (spec v2 step 1): the
    Philox raw words' little-endian bytes, each read as a two's-complement int8 (values in [-128, 127]).

    Precondition: `value_offset` is a multiple of 32 (a Philox block), `count` a multiple of 8.
    """
    if value_offset % _V2_VALUES_PER_BLOCK or count % _V2_VALUES_PER_WORD or count < 0:
        raise ValueError(f"offset {value_offset} must be a multiple of 32 and count {count} of 8")
    out = np.empty(count, dtype=np.int8)
    gen = np.random.Philox(key=np.array(key_words(key16), dtype=np.uint64))
    gen.advance(value_offset // _V2_VALUES_PER_BLOCK)
    for start in range(0, count, _GEN_STEP_VALUES):
        piece = min(_GEN_STEP_VALUES, count - start)
        out[start:start + piece] = gen.random_raw(piece // _V2_VALUES_PER_WORD).astype("<u8", copy=False).view(np.int8)
    return out


def byte_matrix(key16: bytes, rows: int, k: int, row_offset: int = 0) -> np.ndarray:
    """Rows `row_offset .. row_offset+rows-1` of the rows x k byte matrix of `key16` (spec v2; int8, C order).

    Row i starts at Philox block i*k/32, so any block of rows is made without the ones before it.
    """
    if k % _VALUES_PER_BLOCK:
        raise ValueError(f"k must be a multiple of 64, got {k}")
    return byte_values(key16, rows * k, row_offset * k).reshape(rows, k)


def value_matrix(spec: str, key16: bytes, rows: int, k: int, row_offset: int = 0) -> np.ndarray:
    """Rows of the rows x k matrix of `key16` in `spec`'s value stream: nibbles (v1) or bytes (v2)."""
    if spec == SPEC_V1:
        return nibble_matrix(key16, rows, k, row_offset)
    if spec == SPEC_V2:
        return byte_matrix(key16, rows, k, row_offset)
    raise ValueError(f"no value stream for spec {spec!r}")


def b_matrix(params: ChallengeParams, rows: int | None = None, row_offset: int = 0) -> np.ndarray:
    """B (n x k, int8) of the challenge, the same for every round; or `rows` of its rows from `row_offset`."""
    rows = params.n if rows is None else rows
    return value_matrix(params.spec, b_key(params.seed, params.spec), rows, params.k, row_offset)


def a_matrix(params: ChallengeParams, round_index: int, prev_root: bytes, rows: int | None = None,
             row_offset: int = 0) -> np.ndarray:
    """A_r (m x k, int8), or `rows` of its rows from `row_offset`."""
    rows = params.m if rows is None else rows
    key = a_key(params.seed, round_index, prev_root, params.spec)
    return value_matrix(params.spec, key, rows, params.k, row_offset)


def exact_float_dtype(k: int, spec: str) -> type[np.floating]:
    """A float type in which A @ B.T is exact: every partial sum is an integer of magnitude at most
    max_abs_product * k (64k in v1, 2**14 k in v2).

    float32 represents every integer up to 2**24, float64 up to 2**53; v1 caps k at 2**20 (2**26) and v2
    at 131008 (< 2**31), so float32 serves v1 up to k = 2**18 and v2 up to k = 1024, float64 the rest.
    """
    return np.float32 if definition(spec).max_abs_product * k <= 2**24 else np.float64


def as_exact_float(matrix: np.ndarray, spec: str) -> np.ndarray:
    """The int8 matrix (values of `spec`) converted once to the float type that makes BLAS products exact."""
    return matrix.astype(exact_float_dtype(matrix.shape[-1], spec))


def matmul_exact(a: np.ndarray, b_float: np.ndarray) -> np.ndarray:
    """C = A @ B.T exactly, as int32 (m x n). `b_float` is `as_exact_float(B, spec)`.

    BLAS in float is exact here (see exact_float_dtype) and a hundred times faster than NumPy's integer
    matmul; the tests check it against an int64 product.
    """
    return (a.astype(b_float.dtype) @ b_float.T).astype(np.int32)


def exact_chunk(spec: str) -> int:
    """The most columns of k over which a float32 product of `spec`'s values is exact: every partial sum
    is at most max_abs_product per column, and float32 holds every integer up to 2**24, so 2**24 //
    max_abs_product: 2**18 in v1, 1024 in v2 (both multiples of 64)."""
    return 2**24 // definition(spec).max_abs_product


def matmul_exact_chunked(a: np.ndarray, b32: np.ndarray, chunk: int) -> np.ndarray:
    """C = A @ B.T exactly, as int32, with `b32` = B as float32: float32 BLAS over stretches of `chunk`
    columns (`exact_chunk(spec)`: each stretch's product is exact), the stretches summed in int32 (exact:
    every sum of a row's terms is within the spec's int32 bound). Float32 BLAS is over twice as fast as
    float64 on one core, which v2's k > 1024 would otherwise need."""
    k = b32.shape[1]
    if k <= chunk:
        return matmul_exact(a, b32)
    c = np.zeros((a.shape[0], b32.shape[0]), dtype=np.int32)
    for start in range(0, k, chunk):
        c += (a[:, start:start + chunk].astype(np.float32) @ b32[:, start:start + chunk].T).astype(np.int32)
    return c


def c_bytes(c: np.ndarray) -> memoryview:
    """Row-major little-endian bytes of C_r (spec v1 step 4, the same in v2)."""
    return memoryview(np.ascontiguousarray(c, dtype="<i4")).cast("B")  # type: ignore[arg-type]


def round_tree(c: np.ndarray) -> merkle.MerkleTree:
    """The RFC 6962 tree over the 1 KiB chunks of C_r (leaf = SHA-256(0x00 || chunk))."""
    return merkle.MerkleTree(merkle.hash_chunks(c_bytes(c), CHUNK_BYTES))


def row_root(values: np.ndarray) -> bytes:
    """Root of one row's subtree: the RFC 6962 tree over that row's chunks."""
    return merkle.root_of_hashes(merkle.hash_chunks(c_bytes(values), CHUNK_BYTES))


def row_path(tree: merkle.MerkleTree, params: ChallengeParams, row: int) -> list[bytes]:
    """Audit path from row `row`'s subtree root to root_r: an inclusion proof of index `row` among m.

    A row is a complete aligned subtree of chunks_per_row leaves, so the path of its first leaf, less
    the log2(chunks_per_row) hashes inside the row, is exactly that proof.
    """
    inside = params.chunks_per_row.bit_length() - 1
    return tree.inclusion_proof(row * params.chunks_per_row)[inside:]


class CpuBackend:
    """Runs challenges with the NumPy reference: everywhere, slowly. The CUDA backend must match it."""

    name = "cpu"

    def __init__(self) -> None:
        self._b_cache: tuple[ChallengeParams, np.ndarray] | None = None
        self._open_cache: tuple[tuple[ChallengeParams, int, bytes], np.ndarray, Any] | None = None

    def warm_up(self, shapes: Iterable[tuple[int, int, int]] = ()) -> None:
        """One untimed round (root and one row's path) per shape, each side capped at WARM_MAX_SHAPE.

        What it pays before the first timed challenge: BLAS's thread pool (OpenBLAS starts its threads on
        the first product big enough to split, hence a full-size round rather than a token one), the
        first Philox stream, the leaf-hash extension's first call and NumPy's first-call dispatch. The
        caches of `run` and `open` are left as they were.
        """
        for m, n, k in list(shapes) or [WARM_MAX_SHAPE]:
            m, n, k = (min(v, cap) for v, cap in zip((m, n, k), WARM_MAX_SHAPE, strict=True))
            params = ChallengeParams(bytes(32), m, n, k, 1)
            c = matmul_exact_chunked(a_matrix(params, 0, bytes(32)), b_matrix(params).astype(np.float32),
                                     exact_chunk(params.spec))
            row_path(round_tree(c), params, m - 1)

    def _b_float(self, params: ChallengeParams) -> np.ndarray:
        """B as float32 (for `matmul_exact_chunked`), made once per challenge."""
        if self._b_cache is None or self._b_cache[0] != params:
            self._b_cache = (params, b_matrix(params).astype(np.float32))
        return self._b_cache[1]

    def round_c(self, params: ChallengeParams, round_index: int, prev_root: bytes) -> np.ndarray:
        """C_r of one round (int32, m x n)."""
        return matmul_exact_chunked(a_matrix(params, round_index, prev_root), self._b_float(params),
                                    exact_chunk(params.spec))

    def run(self, params: ChallengeParams,
            progress: Callable[[int], None] | None = None) -> list[bytes]:
        """All R roots of the challenge, chaining each round on the previous root."""
        roots: list[bytes] = []
        for r in range(params.rounds):
            c = self.round_c(params, r, prev_root_of(roots, r))
            roots.append(round_tree(c).root)
            if progress is not None:
                progress(r + 1)
        return roots

    def open(self, params: ChallengeParams, round_index: int, row: int,
             roots: list[bytes] | None = None) -> tuple[np.ndarray, list[bytes]]:
        """Row `row` of C_r and its audit path, recomputing round `round_index`.

        With `roots` (the commitment) only that round is recomputed; without, rounds 0..r are.
        """
        if roots is None:
            roots = self.run(params.with_rounds(round_index + 1))
        key = (params, round_index, prev_root_of(roots, round_index))
        if self._open_cache is None or self._open_cache[0] != key:  # openings come sorted by round: once each
            c = self.round_c(params, round_index, key[2])
            self._open_cache = (key, c, round_tree(c))
        _, c, tree = self._open_cache
        return c[row].copy(), row_path(tree, params, row)
