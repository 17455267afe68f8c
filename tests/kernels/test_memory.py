"""The memory phase's NumPy reference (kernels/memory.py) against the spec text read literally, in plain
Python integers, and against the pinned vectors of tests/vectors/spec_v2_memory.json."""

from __future__ import annotations

import hashlib
import struct

import numpy as np
import pytest
from gpuproof.kernels import memory, merkle
from gpuproof.kernels.errors import InvalidParameter
from gpuproof.kernels.memory import LaneOpening, MemoryPlan
from gpuproof.kernels.spec import ChallengeParams
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import load_vectors

VECTORS = load_vectors("spec_v2_memory.json")
M32 = 0xFFFFFFFF


def plan_of(v: dict) -> MemoryPlan:
    params = ChallengeParams(bytes.fromhex(v["seed"]), v["m"], v["n"], v["k"], v["rounds"])
    return MemoryPlan(params, v["table_rounds"], v["lanes"], v["steps"], v["opened"])


def naive_pad(pk: bytes, r: int, leaf: int) -> list[int]:
    words: list[int] = []
    for j in range(32):
        words += struct.unpack("<8I", hashlib.sha256(pk + struct.pack("<III", r, leaf, j)).digest())
    return words


def rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & M32


def naive_step(s: list[int], leaf: list[int]) -> list[int]:
    """Spec v2 memory phase, "step", in Python integers."""
    f = 0
    for j, w in enumerate(leaf):
        u = ((w ^ ((s[2] + j * memory.GAMMA) & M32)) * memory.FOLD_MUL) & M32
        f = (f + (u ^ (u >> 15))) & M32
    a, b, c, d = s[0] ^ f, s[1], s[2], s[3]
    for _ in range(2):
        a = (a + b) & M32; d = rotl(d ^ a, 16)  # noqa: E702
        c = (c + d) & M32; b = rotl(b ^ c, 12)  # noqa: E702
        a = (a + b) & M32; d = rotl(d ^ a, 8)  # noqa: E702
        c = (c + d) & M32; b = rotl(b ^ c, 7)  # noqa: E702
    return [a, b, c, d]


def naive_walk(plan: MemoryPlan, table: np.ndarray, wk: bytes, lane: int) -> list[int]:
    s = list(struct.unpack("<4I", hashlib.sha256(wk + struct.pack("<Q", lane)).digest()[:16]))
    for _ in range(plan.steps):
        address = ((s[1] << 32) | s[0]) % plan.table_leaves
        s = naive_step(s, [int(x) for x in table[address]])
    return s


@pytest.fixture(scope="module")
def play() -> memory.LocalPlay:
    v = VECTORS["walks"][0]
    return memory.play_local(plan_of(v), nonce=bytes.fromhex(v["nonce"]), drawn=v["drawn"])


def test_pad_is_the_spec_text(play):
    pk = memory.pad_key(play.plan.params.seed)
    assert pk == hashlib.sha256(b"gpuproof.pad.v2" + play.plan.params.seed).digest()
    for r, leaf in [(0, 0), (3, 17), (2**32 - 1, 2**32 - 1)]:
        assert memory.leaf_pad(pk, r, leaf).tolist() == naive_pad(pk, r, leaf)
    for vec in VECTORS["pad"]:
        words = memory.leaf_pad(memory.pad_key(bytes.fromhex(vec["seed"])), vec["round"], vec["leaf"])
        assert [f"{w:08x}" for w in words[:8].tolist()] == vec["first_words"]


def test_walk_matches_plain_integers(play):
    v = VECTORS["walks"][0]
    plan = play.plan
    from gpuproof.kernels.reference import CpuBackend
    from gpuproof.kernels.spec import prev_root_of

    cs, backend = [], CpuBackend()
    for r in range(plan.params.rounds):
        c = backend.round_c(plan.params, r, prev_root_of(play.roots, r))
        if r >= plan.first_round:
            cs.append(c)
    table = memory.table_from_rounds(plan, cs)
    wk = memory.walk_key(plan.params.seed, play.roots[-1], bytes.fromhex(v["nonce"]))
    states = memory.walk(plan, table, wk)
    for lane in (0, 1, plan.lanes - 1):
        assert states[lane].tolist() == naive_walk(plan, table, wk, lane)
    # lanes are independent: walking a few alone gives the same states
    some = np.array([5, 0, 5], dtype=np.uint64)
    assert np.array_equal(memory.walk(plan, table, wk, some), states[[5, 0, 5]])
    # the table is C xor the pads: unpadding gives C back
    pk = memory.pad_key(plan.params.seed)
    assert np.array_equal(table[1] ^ memory.leaf_pad(pk, plan.first_round, 1),
                          np.ascontiguousarray(cs[0], dtype="<i4").view("<u4").ravel()[256:512])


def test_vectors_reproduce(play):
    v = VECTORS["walks"][0]
    assert [r.hex() for r in play.roots] == v["roots"]
    assert play.walk_root.hex() == v["walk_root"]
    assert [o.state.hex() for o in play.openings] == v["opened_states"]
    assert memory.walk_key(play.plan.params.seed, play.roots[-1], play.nonce).hex() == v["walk_key"]


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 255), st.integers(0, 2**32 - 1), st.binary(min_size=16, max_size=16))
def test_every_word_of_a_leaf_changes_the_fold(word, flip, state):
    """A leaf cannot be summarised: change any one word (any way) and the fold changes, for any state."""
    flip = flip or 1
    s = np.frombuffer(state, "<u4").astype(np.uint32).reshape(1, 4)
    leaf = np.arange(256, dtype=np.uint32).reshape(1, 256) * np.uint32(2654435761)
    other = leaf.copy()
    other[0, word] ^= np.uint32(flip)
    assert memory.fold(s, leaf)[0] != memory.fold(s, other)[0]


def test_lane_tree_is_rfc6962_over_states(play):
    states = np.array([[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]], dtype=np.uint32)
    tree = memory.lane_tree(states)
    assert tree.root == merkle.MerkleTree.from_leaves([memory.state_bytes(s) for s in states]).root


def test_plan_refuses_what_the_spec_does_not_allow():
    params = ChallengeParams(bytes(32), 32, 256, 64, 4)
    for kwargs, param in [({"table_rounds": 5}, "--table-rounds"), ({"lanes": 0}, "--lanes"),
                          ({"steps": -1}, "--steps"), ({"opened": True}, "--opened")]:
        args = {"table_rounds": 2, "lanes": 8, "steps": 4, "opened": 2} | kwargs
        with pytest.raises(InvalidParameter) as err:
            MemoryPlan(params, **args)
        assert err.value.param == param
    with pytest.raises(InvalidParameter):
        memory.walk_key(bytes(32), bytes(32), bytes(15))


def test_lane_opening_wire_form_round_trips(play):
    for opening in play.openings:
        assert LaneOpening.from_json(opening.to_json()) == opening
    bad = play.openings[0].to_json() | {"state": "zz"}
    with pytest.raises(InvalidParameter):
        LaneOpening.from_json(bad)
    with pytest.raises(InvalidParameter):
        LaneOpening.from_json({"lane": 1})
    with pytest.raises(InvalidParameter):
        LaneOpening.from_json(play.openings[0].to_json() | {"lane": -1})
