"""Spec gpuproof/1: parameter validation and key derivation against the issue's vectors."""

from __future__ import annotations

import hashlib

import pytest
from gpuproof.kernels.errors import InvalidParameter
from gpuproof.kernels.spec import ChallengeParams, b_key, key_words, parse_seed, round_seed

from tests.conftest import load_vectors

SPEC = load_vectors("spec_v1.json")
SEED = bytes(32)


def test_b_key_words_vector():
    v1 = SPEC["challenges"][0]
    assert [f"{w:016x}" for w in key_words(b_key(bytes.fromhex(v1["seed"])))] == v1["b_key_words"]


def test_v2_seed_is_the_documented_hash():
    v2 = SPEC["challenges"][1]
    assert hashlib.sha256(v2["seed_is_sha256_of"].encode()).hexdigest() == v2["seed"]


def test_round_seed_follows_the_formula():
    prev = bytes(range(32))
    want = hashlib.sha256(b"gpuproof.round.v1" + SEED + (3).to_bytes(4, "little") + prev).digest()
    assert round_seed(SEED, 3, prev) == want


@pytest.mark.parametrize("text, fragment", [
    ("00", "got 2"), ("zz" * 32, "non-hex"), ("0" * 66, "got 66"), ("", "got 0"),
])
def test_parse_seed_rejects(text, fragment):
    with pytest.raises(InvalidParameter, match=fragment) as info:
        parse_seed(text)
    assert info.value.param == "--seed"


def test_parse_seed_accepts_0x_prefix_and_upper_case():
    assert parse_seed("0x" + "AB" * 32) == bytes([0xAB]) * 32


@pytest.mark.parametrize("kwargs, param", [
    ({"n": 300}, "--n"), ({"n": 768}, "--n"), ({"n": 128}, "--n"), ({"n": 0}, "--n"),
    ({"k": 100}, "--k"), ({"k": 2**20 + 64}, "--k"), ({"k": 0}, "--k"),
    ({"m": 0}, "--m"), ({"m": -4}, "--m"), ({"rounds": 0}, "--rounds"), ({"m": 2.5}, "--m"),
    ({"m": True}, "--m"), ({"seed": bytes(31)}, "--seed"), ({"seed": "00" * 32}, "--seed"),
])
def test_params_reject_out_of_spec(kwargs, param):
    base = {"seed": SEED, "m": 8, "n": 256, "k": 64, "rounds": 1}
    base.update(kwargs)
    with pytest.raises(InvalidParameter) as info:
        ChallengeParams(**base)
    assert info.value.param == param


@pytest.mark.parametrize("n, chunks", [(256, 1), (512, 2), (1024, 4), (8192, 32)])
def test_params_accept_powers_of_two_times_256(n, chunks):
    p = ChallengeParams(SEED, 3, n, 2**20, 1)
    assert p.chunks_per_row == chunks
    assert p.leaves_per_round == 3 * chunks


def test_params_wire_form_round_trips_and_names_bad_fields():
    params = ChallengeParams(bytes(range(32)), 16, 256, 64, 3)
    assert ChallengeParams.from_json(params.to_dict()) == params
    assert ChallengeParams.from_json(params.to_dict() | {"challenge_id": "a" * 32, "deadline_s": 10.0}) == params
    with pytest.raises(InvalidParameter, match="challenge.spec"):
        ChallengeParams.from_json(params.to_dict() | {"spec": "gpuproof/2"})
    with pytest.raises(InvalidParameter, match="challenge.seed"):
        ChallengeParams.from_json(params.to_dict() | {"seed": "zz"})
    with pytest.raises(InvalidParameter, match="missing field 'rounds'"):
        ChallengeParams.from_json({k: v for k, v in params.to_dict().items() if k != "rounds"})
    assert params.operations == 2.0 * 16 * 256 * 64 * 3
