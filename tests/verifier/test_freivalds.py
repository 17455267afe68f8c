"""Freivalds checks: y = B.T @ x exact against object-integer arithmetic, rows accepted and rejected."""

from __future__ import annotations

import secrets

import numpy as np
import pytest
from gpuproof.kernels import reference
from gpuproof.kernels.spec import SPEC_V1, SPEC_V2, ChallengeParams
from gpuproof.verifier import freivalds
from hypothesis import given, settings
from hypothesis import strategies as st


def slow_y(params: ChallengeParams, x: np.ndarray) -> list[int]:
    b = reference.b_matrix(params).astype(object)
    return list(b.T.dot(x.astype(object)))


@pytest.mark.parametrize("spec", [SPEC_V1, SPEC_V2])
@pytest.mark.parametrize("fill", ["random", "max", "zero"])
@pytest.mark.parametrize("n, k", [(256, 64), (512, 192), (768 * 0 + 1024, 128), (256, 1088)])
def test_y_vector_is_exact(n, k, fill, spec):
    params = ChallengeParams(bytes(range(32)), 4, n, k, 1, spec)
    x = {"random": freivalds.draw_x(n, secrets.token_bytes), "max": np.full(n, 2**32 - 1, np.int64),
         "zero": np.zeros(n, np.int64)}[fill]
    assert [int(v) for v in freivalds.y_vector(params, x)] == slow_y(params, x)


def test_y_vector_rejects_bad_x():
    params = ChallengeParams(bytes(32), 4, 256, 64, 1)
    with pytest.raises(ValueError):
        freivalds.y_vector(params, np.zeros(255, np.int64))
    with pytest.raises(ValueError):
        freivalds.y_vector(params, np.full(256, 2**32, np.int64))


def test_draw_x_uses_the_byte_source_and_range():
    x = freivalds.draw_x(1000, secrets.token_bytes)
    assert x.shape == (1000,) and x.min() >= 0 and x.max() < 2**32 and len(set(x.tolist())) > 990
    with pytest.raises(ValueError):
        freivalds.draw_x(4, lambda n: b"\x00" * (n - 1))


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 31), st.integers(0, 255), st.integers(-1000, 1000).filter(lambda d: d != 0),
       st.sampled_from([SPEC_V1, SPEC_V2]))
def test_right_rows_pass_and_any_changed_value_fails(row, column, delta, spec):
    params = ChallengeParams(bytes(range(1, 33)), 32, 256, 128, 1, spec)
    c = reference.CpuBackend().round_c(params, 0, bytes(32))
    x = freivalds.draw_x(params.n, secrets.token_bytes)
    y = freivalds.y_vector(params, x)
    a = freivalds.a_row(params, 0, bytes(32), row)
    assert freivalds.row_passes(c[row], x, a, y)
    bad = c[row].astype(np.int64)
    bad[column] += delta
    assert not freivalds.row_passes(bad, x, a, y)  # fails unless x[column] == 0: probability 2**-32
    assert freivalds.first_wrong_column(params, bad, a) == (column, int(bad[column]), int(c[row][column]))
    assert freivalds.first_wrong_column(params, c[row], a) is None


def test_exact_dot_does_not_overflow():
    a = np.full(10, 2**40, np.int64)
    assert freivalds.exact_dot(a, a) == 10 * 2**80


def test_v2_y_vector_is_exact_at_the_worst_case_of_its_float32_blocks(monkeypatch):
    """All-(-128) B rows and x = 2**32 - 1: each 16-row block's float32 partial sums reach 16 * 255 * 128,
    the largest the limb split allows; y must still be exact (and equal -128 * sum(x) per column)."""
    params = ChallengeParams(bytes(32), 4, 256, 64, 1, SPEC_V2)
    real = np.random.Philox

    class AllLowest:
        def __init__(self, key):
            self.inner = real(key=key)

        def random_raw(self, size):
            return np.full(size, 0x8080808080808080, dtype=np.uint64)  # every byte 0x80: -128

    monkeypatch.setattr(np.random, "Philox", AllLowest)
    x = np.full(params.n, 2**32 - 1, np.int64)
    assert freivalds.y_vector(params, x).tolist() == [-128 * (2**32 - 1) * params.n] * params.k
