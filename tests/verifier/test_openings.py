"""Opening round trips and precise rejections (spec v1, "Openings")."""

from __future__ import annotations

import numpy as np
import pytest
from gpuproof.kernels.backend import Opening
from gpuproof.kernels.errors import InvalidParameter, OpeningRejected
from gpuproof.kernels.reference import CpuBackend
from gpuproof.kernels.spec import ChallengeParams
from gpuproof.verifier.openings import ChallengeReference, verify_opening
from hypothesis import given, settings
from hypothesis import strategies as st

PARAMS = ChallengeParams(bytes.fromhex("11" * 32), 24, 512, 128, 3)
BACKEND = CpuBackend()
ROOTS = BACKEND.run(PARAMS)
REF = ChallengeReference(PARAMS)


def opening(round_index: int, row: int) -> Opening:
    values, path = BACKEND.open(PARAMS, round_index, row, ROOTS)
    return Opening(round_index, row, values, tuple(path))


@settings(max_examples=25, deadline=None)
@given(st.integers(0, PARAMS.rounds - 1), st.integers(0, PARAMS.m - 1))
def test_round_trip_random_round_and_row(round_index, row):
    verify_opening(PARAMS, ROOTS, opening(round_index, row), REF)


def test_round_trip_through_json():
    o = opening(1, 5)
    verify_opening(PARAMS, ROOTS, Opening.from_json(o.to_json()))


@settings(max_examples=25, deadline=None)
@given(st.integers(0, PARAMS.n - 1), st.integers(1, 1000))
def test_tampered_value_rejected(column, delta):
    o = opening(2, 7)
    values = o.values.copy()
    values[column] += delta
    with pytest.raises(OpeningRejected) as info:
        verify_opening(PARAMS, ROOTS, Opening(2, 7, values, o.path), REF)
    assert info.value.reason == "bad-path"  # the commitment catches it before the arithmetic does


def test_row_committed_wrong_is_rejected_at_the_first_wrong_column():
    """A prover that commits a wrong row passes the path check and fails the exact check, with the column."""
    params = ChallengeParams(bytes.fromhex("22" * 32), 4, 256, 64, 1)
    good = CpuBackend().round_c(params, 0, bytes(32))
    bad = good.copy()
    bad[3, 200] += 1
    bad[3, 201] -= 5
    from gpuproof.kernels.reference import round_tree, row_path

    tree = round_tree(bad)
    o = Opening(0, 3, bad[3], tuple(row_path(tree, params, 3)))
    with pytest.raises(OpeningRejected, match="wrong value at column 200") as info:
        verify_opening(params, [tree.root], o)
    assert info.value.reason == "wrong-value" and info.value.column == 200


@pytest.mark.parametrize("mutate, reason", [
    (lambda o: Opening(o.round, o.row, o.values[:-1], o.path), "bad-length"),
    (lambda o: Opening(o.round, o.row, np.concatenate([o.values, [0]]), o.path), "bad-length"),
    (lambda o: Opening(3, o.row, o.values, o.path), "bad-round"),
    (lambda o: Opening(o.round, 24, o.values, o.path), "bad-row"),
    (lambda o: Opening(o.round, o.row + 1, o.values, o.path), "bad-path"),
    (lambda o: Opening(o.round - 1, o.row, o.values, o.path), "bad-path"),
    (lambda o: Opening(o.round, o.row, o.values, o.path[:-1]), "bad-path"),
    (lambda o: Opening(o.round, o.row, o.values, o.path + (bytes(32),)), "bad-path"),
    (lambda o: Opening(o.round, o.row, o.values, (bytes(32),) + o.path[1:]), "bad-path"),
])
def test_rejections_name_the_reason(mutate, reason):
    with pytest.raises(OpeningRejected) as info:
        verify_opening(PARAMS, ROOTS, mutate(opening(1, 9)), REF)
    assert info.value.reason == reason


def test_wrong_commitment_length_rejected():
    with pytest.raises(OpeningRejected, match="commitment has 2 roots, want 3"):
        verify_opening(PARAMS, ROOTS[:2], opening(0, 0), REF)


def test_round_chaining_uses_the_committed_previous_root():
    """Open round 1 against a commitment whose root_0 was swapped: the exact check must fail."""
    o = opening(1, 2)
    roots = list(ROOTS)
    roots[0] = bytes(32)
    with pytest.raises(OpeningRejected) as info:
        verify_opening(PARAMS, roots, o, REF)
    assert info.value.reason == "wrong-value"


@pytest.mark.parametrize("data, param", [
    ({"round": 0, "row": 0, "values": [1, 2], "path": ["zz"]}, "path"),
    ({"round": 0, "row": 0, "values": [1, "2"], "path": []}, "values"),
    ({"round": 0, "row": 0, "values": [2**31], "path": []}, "values"),
    ({"round": -1, "row": 0, "values": [1], "path": []}, "round"),
    ({"round": 0, "row": 0, "values": [1], "path": ["00"]}, "path"),
    ({"round": 0, "row": 0, "values": [1]}, "opening"),
])
def test_wire_form_is_validated(data, param):
    with pytest.raises(InvalidParameter) as info:
        Opening.from_json(data)
    assert info.value.param == param
