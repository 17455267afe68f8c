"""Specs gpuproof/1 and /2: parameter validation and key derivation against the issues' vectors."""

from __future__ import annotations

import hashlib

import pytest
from gpuproof.kernels.errors import InvalidParameter
from gpuproof.kernels.spec import (
    SPEC_V1,
    SPEC_V2,
    V1,
    V2,
    ChallengeParams,
    a_key,
    b_key,
    key_words,
    parse_seed,
    parse_spec,
    round_seed,
)

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


# ---- spec gpuproof/2 ---------------------------------------------------------------------------------
V2_VECTORS = load_vectors("spec_v2.json")


@pytest.mark.parametrize("vector", V2_VECTORS["challenges"], ids=lambda v: v["desc"])
def test_v2_key_words_vectors(vector):
    seed = bytes.fromhex(vector["seed"])
    assert [f"{w:016x}" for w in key_words(b_key(seed, SPEC_V2))] == vector["b_key_words"]
    assert [f"{w:016x}" for w in key_words(a_key(seed, 0, bytes(32), SPEC_V2))] == vector["a0_key_words"]
    if "seed_is_sha256_of" in vector:
        assert hashlib.sha256(vector["seed_is_sha256_of"].encode()).hexdigest() == vector["seed"]


def test_v2_domain_strings_follow_the_formula():
    prev = bytes(range(32))
    want = hashlib.sha256(b"gpuproof.round.v2" + SEED + (3).to_bytes(4, "little") + prev).digest()
    assert round_seed(SEED, 3, prev, SPEC_V2) == want
    assert b_key(SEED, SPEC_V2) == hashlib.sha256(b"gpuproof.B.v2" + SEED).digest()[:16]
    assert b_key(SEED, SPEC_V2) != b_key(SEED) and round_seed(SEED, 3, prev) != want  # v1 unchanged


def test_v2_k_bound_keeps_every_int32_sum_exact():
    """k * 2**14 < 2**31: 131071 at most, 131008 with k % 64 == 0 (docs/protocol.md, "Spec v2")."""
    assert V2.max_k == V2_VECTORS["max_k"] == 131008
    assert V2.max_abs_product == 2**14 and V1.max_abs_product == 64
    assert V2.max_k * 2**14 < 2**31 <= (V2.max_k + 64) * 2**14
    assert ChallengeParams(SEED, 1, 256, 131008, 1, SPEC_V2).k == 131008
    with pytest.raises(InvalidParameter, match="at most 131008 in gpuproof/2") as info:
        ChallengeParams(SEED, 1, 256, 131072, 1, SPEC_V2)
    assert info.value.param == "--k"
    assert ChallengeParams(SEED, 1, 256, 131072, 1).k == 131072  # v1's bound is its own (2**20)


@pytest.mark.parametrize("spec", ["gpuproof/3", "gpuproof/0", "", None, 2])
def test_params_refuse_an_unknown_spec(spec):
    with pytest.raises(InvalidParameter) as info:
        ChallengeParams(SEED, 1, 256, 64, 1, spec)
    assert info.value.param == "--spec"


@pytest.mark.parametrize("text, name", [("1", SPEC_V1), ("2", SPEC_V2), (2, SPEC_V2), ("gpuproof/1", SPEC_V1)])
def test_parse_spec(text, name):
    assert parse_spec(text) == name


def test_parse_spec_refuses_other_versions():
    with pytest.raises(InvalidParameter, match="gpuproof/1, gpuproof/2"):
        parse_spec("3")


def test_wire_form_round_trips_and_a_form_without_spec_is_v1():
    p = ChallengeParams(bytes(range(32)), 8, 512, 128, 3, SPEC_V2)
    assert p.to_dict()["spec"] == "gpuproof/2"
    assert ChallengeParams.from_json(p.to_dict()) == p
    old = {k: v for k, v in p.to_dict().items() if k != "spec"}
    assert ChallengeParams.from_json(old).spec == SPEC_V1
    with pytest.raises(InvalidParameter, match="missing field 'rounds'"):
        ChallengeParams.from_json({"seed": "00" * 32, "m": 1, "n": 256, "k": 64})
    assert p.with_rounds(1) == ChallengeParams(p.seed, 8, 512, 128, 1, SPEC_V2)


def test_params_wire_form_round_trips_and_names_bad_fields():
    params = ChallengeParams(bytes(range(32)), 16, 256, 64, 3)
    assert ChallengeParams.from_json(params.to_dict()) == params
    assert ChallengeParams.from_json(params.to_dict() | {"challenge_id": "a" * 32, "deadline_s": 10.0}) == params
    with pytest.raises(InvalidParameter, match="challenge.spec"):
        ChallengeParams.from_json(params.to_dict() | {"spec": "gpuproof/3"})
    with pytest.raises(InvalidParameter, match="challenge.seed"):
        ChallengeParams.from_json(params.to_dict() | {"seed": "zz"})
    with pytest.raises(InvalidParameter, match="missing field 'rounds'"):
        ChallengeParams.from_json({k: v for k, v in params.to_dict().items() if k != "rounds"})
    assert params.operations == 2.0 * 16 * 256 * 64 * 3
