"""Checking one opened (round, row) of a committed challenge (docs/protocol.md, "Openings").

Pure: bytes and arrays in, None or an `OpeningRejected` with a precise reason out. The verifier-core
protocol (Freivalds bound to the commitment) builds on `row_subtree_root` and the inclusion check here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from gpuproof.kernels import merkle, reference
from gpuproof.kernels.backend import Opening
from gpuproof.kernels.errors import OpeningRejected, ProofError
from gpuproof.kernels.spec import ChallengeParams, prev_root_of


class ChallengeReference:
    """What a verifier regenerates for one challenge, made once and reused for every opened row.

    B is made lazily, once, as the float matrix that makes the exact row check a BLAS product.
    """

    def __init__(self, params: ChallengeParams) -> None:
        self.params = params
        self._b_float: np.ndarray | None = None

    @property
    def b_float(self) -> np.ndarray:
        if self._b_float is None:
            self._b_float = reference.as_exact_float(reference.b_matrix(self.params), self.params.spec)
        return self._b_float

    def a_row(self, round_index: int, prev_root: bytes, row: int) -> np.ndarray:
        """A_r[row] alone (int8, k values), made by Philox `advance` to the row's first block."""
        return reference.a_matrix(self.params, round_index, prev_root, rows=1, row_offset=row)[0]

    def expected_row(self, round_index: int, prev_root: bytes, row: int) -> np.ndarray:
        """C_r[row] = A_r[row] @ B.T, exact, as int64 (n values)."""
        a = self.a_row(round_index, prev_root, row).astype(self.b_float.dtype)
        return (self.b_float @ a).astype(np.int64)


def row_subtree_root(values: np.ndarray) -> bytes:
    """The RFC 6962 root over the 1 KiB chunks of one row's int32 little-endian bytes."""
    return reference.row_root(np.asarray(values, dtype=np.int32))


def check_row_inclusion(params: ChallengeParams, roots: Sequence[bytes], opening: Opening) -> None:
    """Range checks, then the row's subtree root must be leaf `row` of the m-leaf tree of root_r."""
    if len(roots) != params.rounds:
        raise OpeningRejected("bad-commitment", f"commitment has {len(roots)} roots, want {params.rounds}")
    if opening.round >= params.rounds:
        raise OpeningRejected("bad-round", f"round {opening.round} is not in 0..{params.rounds - 1}")
    if opening.row >= params.m:
        raise OpeningRejected("bad-row", f"row {opening.row} is not in 0..{params.m - 1}")
    if opening.values.shape != (params.n,):
        raise OpeningRejected("bad-length", f"row has {opening.values.size} values, want {params.n}")
    try:
        merkle.verify_inclusion(opening.row, params.m, row_subtree_root(opening.values), opening.path,
                                roots[opening.round])
    except ProofError as exc:
        raise OpeningRejected("bad-path", str(exc)) from None


def first_difference(got: np.ndarray, want: np.ndarray) -> int | None:
    """Index of the first column where two rows differ, or None."""
    diff = np.flatnonzero(np.asarray(got, dtype=np.int64) != np.asarray(want, dtype=np.int64))
    return int(diff[0]) if diff.size else None


def verify_opening(params: ChallengeParams, roots: Sequence[bytes], opening: Opening,
                   ref: ChallengeReference | None = None) -> None:
    """Check an opening completely: bound to the commitment, and every value exact.

    1. the row's subtree root with the audit path must give the committed root_r;
    2. the row must equal A_r[row] @ B.T exactly (A_r chained on the committed root_{r-1}).
    Returns None, or raises OpeningRejected with reason bad-commitment, bad-round, bad-row, bad-length,
    bad-path or wrong-value (naming the first wrong column).
    """
    check_row_inclusion(params, roots, opening)
    ref = ref if ref is not None else ChallengeReference(params)
    want = ref.expected_row(opening.round, prev_root_of(list(roots), opening.round), opening.row)
    column = first_difference(opening.values, want)
    if column is not None:
        raise OpeningRejected(
            "wrong-value",
            f"round {opening.round} row {opening.row}: wrong value at column {column}: "
            f"got {int(opening.values[column])}, want {int(want[column])}",
            column=column,
        )
