"""RFC 6962 trees: published vectors, a naive recursive oracle, negative probes and properties."""

from __future__ import annotations

import hashlib

import pytest
from gpuproof.kernels import merkle
from gpuproof.kernels.errors import ProofError
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import load_vectors

RFC = load_vectors("rfc6962.json")
PROBES = load_vectors("inclusion_probes.json")["probes"]
CONSISTENCY_PROBES = load_vectors("consistency_probes.json")["probes"]
LEAVES = [bytes.fromhex(x) for x in RFC["leaf_inputs"]]


# --- naive oracle: RFC 6962 section 2.1, written as literally as possible --------------------------
def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def oracle_mth(d: list[bytes]) -> bytes:
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return hashlib.sha256(b"\x00" + d[0]).digest()
    k = _k(len(d))
    return hashlib.sha256(b"\x01" + oracle_mth(d[:k]) + oracle_mth(d[k:])).digest()


def oracle_path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = _k(len(d))
    if m < k:
        return oracle_path(m, d[:k]) + [oracle_mth(d[k:])]
    return oracle_path(m - k, d[k:]) + [oracle_mth(d[:k])]


def oracle_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [oracle_mth(d)]
    k = _k(n)
    if m <= k:
        return oracle_subproof(m, d[:k], b) + [oracle_mth(d[k:])]
    return oracle_subproof(m - k, d[k:], False) + [oracle_mth(d[:k])]


def data(n: int) -> list[bytes]:
    return [i.to_bytes(4, "little") * 3 for i in range(n)]


# --- published vectors --------------------------------------------------------------------------
def test_empty_tree_and_empty_leaf_hashes():
    assert merkle.EMPTY_ROOT.hex().startswith("e3b0c442")
    assert merkle.root_of_hashes(b"") == merkle.EMPTY_ROOT
    assert merkle.leaf_hash(b"").hex().startswith("6e340b9c")


@pytest.mark.parametrize("size", range(len(RFC["roots_by_size"])))
def test_rfc6962_roots(size):
    assert merkle.MerkleTree.from_leaves(LEAVES[:size]).root.hex() == RFC["roots_by_size"][size]


def test_rfc6962_node_hashes():
    tree = merkle.MerkleTree.from_leaves(LEAVES)
    for height, nodes in enumerate(RFC["node_hashes"]):
        level = tree.level(height)
        assert [level[32 * i:32 * i + 32].hex() for i in range(len(nodes))] == nodes


@pytest.mark.parametrize("case", RFC["inclusion"], ids=lambda c: c["desc"])
def test_rfc6962_inclusion_vectors(case):
    tree = merkle.MerkleTree.from_leaves(LEAVES[:case["size"]])
    proof = [bytes.fromhex(h) for h in case["proof"]]
    assert tree.inclusion_proof(case["index"]) == proof
    root = bytes.fromhex(RFC["roots_by_size"][case["size"]])
    merkle.verify_inclusion(case["index"], case["size"], merkle.leaf_hash(LEAVES[case["index"]]), proof, root)


@pytest.mark.parametrize("case", RFC["consistency"], ids=lambda c: c["desc"])
def test_rfc6962_consistency_vectors(case):
    tree = merkle.MerkleTree.from_leaves(LEAVES[:case["new"]])
    proof = [bytes.fromhex(h) for h in case["proof"]]
    assert tree.consistency_proof(case["old"]) == proof
    roots = RFC["roots_by_size"]
    merkle.verify_consistency(case["old"], case["new"], bytes.fromhex(roots[case["old"]]),
                              bytes.fromhex(roots[case["new"]]), proof)


# --- negative probes (data) ---------------------------------------------------------------------
@pytest.mark.parametrize("probe", PROBES, ids=lambda p: p["desc"])
def test_inclusion_negative_probes(probe):
    proof = [bytes.fromhex(h) for h in probe["proof"]]
    with pytest.raises(ProofError, match=probe["error"]):
        merkle.verify_inclusion(probe["index"], probe["size"], bytes.fromhex(probe["leaf"]), proof,
                                bytes.fromhex(probe["root"]))


def test_probe_base_is_valid():
    """The probes are mutations of a proof that verifies; otherwise they would prove nothing."""
    p = PROBES[0]
    good = [bytes.fromhex(h) for h in RFC["inclusion"][1]["proof"]]
    merkle.verify_inclusion(5, 8, bytes.fromhex(RFC["node_hashes"][0][5]), good,
                            bytes.fromhex(RFC["roots_by_size"][8]))
    assert p["index"] == 5 and p["size"] == 8


@pytest.mark.parametrize("probe", CONSISTENCY_PROBES, ids=lambda p: p["desc"])
def test_consistency_negative_probes(probe):
    proof = [bytes.fromhex(h) for h in probe["proof"]]
    with pytest.raises(ProofError, match=probe["error"]):
        merkle.verify_consistency(probe["old"], probe["new"], bytes.fromhex(probe["old_root"]),
                                  bytes.fromhex(probe["new_root"]), proof)


@pytest.mark.parametrize("probe", [p for p in CONSISTENCY_PROBES if "want" in p["error"]], ids=lambda p: p["desc"])
def test_consistency_probe_lengths_are_rfc_6962s(probe):
    """A wrong-length probe's expected length is that of PROOF(old, D[0:new]) of RFC 6962 2.1.2 (the oracle)."""
    want = int(probe["error"].rsplit(" ", 1)[1])
    assert len(oracle_subproof(probe["old"], data(probe["new"]), True)) == want


def test_consistency_probe_bases_are_valid():
    """The consistency probes mutate proofs that verify; otherwise they would prove nothing."""
    roots = [bytes.fromhex(r) for r in RFC["roots_by_size"]]
    for case in RFC["consistency"]:
        merkle.verify_consistency(case["old"], case["new"], roots[case["old"]], roots[case["new"]],
                                  [bytes.fromhex(h) for h in case["proof"]])
    assert {(p["old"], p["new"]) for p in CONSISTENCY_PROBES} >= {(6, 8), (1, 8), (4, 8)}


# --- the fast tree against the oracle -----------------------------------------------------------
def test_roots_match_oracle_for_sizes_1_to_300():
    d = data(300)
    hashes = b"".join(merkle.leaf_hash(x) for x in d)
    for size in range(1, 301):
        assert merkle.root_of_hashes(hashes[:32 * size]) == oracle_mth(d[:size]), size


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 8, 9, 13, 16, 17, 31, 33, 64, 100, 127])
def test_every_audit_path_matches_oracle_and_verifies(size):
    d = data(size)
    tree = merkle.MerkleTree.from_leaves(d)
    for i in range(size):
        proof = tree.inclusion_proof(i)
        assert proof == oracle_path(i, d)
        assert len(proof) == merkle.inclusion_proof_length(i, size)
        merkle.verify_inclusion(i, size, merkle.leaf_hash(d[i]), proof, tree.root)


@pytest.mark.parametrize("new", [1, 2, 3, 7, 8, 9, 16, 21, 33])
def test_every_consistency_proof_matches_oracle_and_verifies(new):
    d = data(new)
    tree = merkle.MerkleTree.from_leaves(d)
    for old in range(1, new + 1):
        proof = tree.consistency_proof(old)
        assert proof == ([] if old == new else oracle_subproof(old, d, True))
        merkle.verify_consistency(old, new, oracle_mth(d[:old]), tree.root, proof)


def test_consistency_rejects_rewritten_history():
    d = data(10)
    tree = merkle.MerkleTree.from_leaves(d)
    forged = oracle_mth([b"rewritten"] + d[1:6])
    with pytest.raises(ProofError, match="old root"):
        merkle.verify_consistency(6, 10, forged, tree.root, tree.consistency_proof(6))
    with pytest.raises(ProofError, match="larger"):
        merkle.verify_consistency(11, 10, tree.root, tree.root, [])
    with pytest.raises(ProofError):
        merkle.verify_consistency(6, 10, oracle_mth(d[:6]), tree.root, tree.consistency_proof(6)[:-1])
    with pytest.raises(ProofError):
        merkle.verify_consistency(6, 10, oracle_mth(d[:6]), tree.root,
                                  tree.consistency_proof(6) + [merkle.EMPTY_ROOT])


def test_pymerkle_agrees_on_rfc6962_roots():
    """Independent implementation (pymerkle, RFC 9162 prefixes) as a cross-check."""
    pymerkle = pytest.importorskip("pymerkle")
    t = pymerkle.InmemoryTree(algorithm="sha256")
    d = data(70)
    hashes = b"".join(merkle.leaf_hash(x) for x in d)
    for size in range(1, 71):
        t.append_entry(d[size - 1])
        assert t.get_root(size) == merkle.root_of_hashes(hashes[:32 * size]), size


# --- properties ---------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=40), min_size=1, max_size=80), st.data())
def test_property_verify_prove_and_any_changed_byte_rejected(leaves, draw):
    tree = merkle.MerkleTree.from_leaves(leaves)
    i = draw.draw(st.integers(0, len(leaves) - 1))
    proof = tree.inclusion_proof(i)
    leaf = merkle.leaf_hash(leaves[i])
    merkle.verify_inclusion(i, len(leaves), leaf, proof, tree.root)
    if proof:
        j = draw.draw(st.integers(0, len(proof) - 1))
        byte = draw.draw(st.integers(0, 31))
        bad = list(proof)
        bad[j] = bad[j][:byte] + bytes([bad[j][byte] ^ 0x01]) + bad[j][byte + 1:]
        with pytest.raises(ProofError):
            merkle.verify_inclusion(i, len(leaves), leaf, bad, tree.root)
    changed = bytes([leaf[0] ^ 0x80]) + leaf[1:]
    with pytest.raises(ProofError):
        merkle.verify_inclusion(i, len(leaves), changed, proof, tree.root)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 200), st.data())
def test_property_consistency_between_any_sizes(new, draw):
    old = draw.draw(st.integers(0, new))
    d = data(new)
    tree = merkle.MerkleTree.from_leaves(d)
    merkle.verify_consistency(old, new, oracle_mth(d[:old]), tree.root, tree.consistency_proof(old))


@pytest.mark.parametrize("leaves", [1, 2, 3, 5, 8, 100, 513])
def test_tree_from_levels_gives_the_same_proofs(leaves):
    """The GPU path hands back raw levels; proofs cut from them must equal the tree's own."""
    d = data(leaves)
    tree = merkle.MerkleTree.from_leaves(d)
    sizes, offsets = merkle.level_layout(leaves)
    assert sizes[0] == leaves and sizes[-1] == 1 and offsets[0] == 0
    assert all(offsets[i + 1] == offsets[i] + sizes[i] for i in range(len(sizes) - 1))
    again = merkle.tree_from_levels([tree.level(h) for h in range(len(sizes))])
    assert again.root == tree.root
    assert all(again.inclusion_proof(i) == tree.inclusion_proof(i) for i in range(leaves))
    with pytest.raises(ValueError, match="level sizes"):
        merkle.tree_from_levels([tree.level(h) for h in range(len(sizes))][:-1] if leaves > 1 else [b"x" * 64])


def test_row_levels_form_the_tree_over_row_roots():
    """Levels from log2(chunks per row) up are the m-leaf tree the openings prove against."""
    chunks_per_row, rows = 4, 6
    d = data(chunks_per_row * rows)
    tree = merkle.MerkleTree.from_leaves(d)
    sizes, _ = merkle.level_layout(len(d))
    row_tree = merkle.tree_from_levels([tree.level(h) for h in range(2, len(sizes))])
    row_roots = [oracle_mth(d[i * 4:(i + 1) * 4]) for i in range(rows)]
    assert row_tree.root == tree.root == merkle.root_of_hashes(b"".join(row_roots))
    for i in range(rows):
        merkle.verify_inclusion(i, rows, row_roots[i], row_tree.inclusion_proof(i), tree.root)


@pytest.mark.skipif(not merkle.ACCELERATED, reason="kernels._leafhash is not built (no C compiler or OpenSSL "
                    "headers at install time): hashlib is used, and tested everywhere else")
@given(st.binary(min_size=0, max_size=64 * 40), st.sampled_from([1, 32, 64, 1024]))
@settings(max_examples=60, deadline=None)
def test_c_loops_equal_hashlib(data, chunk):
    data = data[: len(data) - len(data) % chunk]
    want = b"".join(hashlib.sha256(b"\x00" + data[i:i + chunk]).digest() for i in range(0, len(data), chunk))
    assert merkle.hash_chunks(data, chunk) == want == merkle._py_hash_chunks(data, chunk)
    level = want[: len(want) - len(want) % 32]
    assert merkle._next_level(level) == merkle._py_next_level(level)
    with pytest.raises(ValueError, match="whole number"):
        merkle.hash_chunks(data + b"x", chunk) if chunk > 1 else merkle._next_level(level + b"x")


def test_c_loops_accept_numpy_views():
    import numpy as np

    a = np.arange(4096, dtype=np.float32)
    assert merkle.hash_chunks(a, 1024) == merkle._py_hash_chunks(a.tobytes(), 1024)
    strided = a[::2]  # not contiguous: copied first
    assert merkle.hash_chunks(strided, 1024) == merkle._py_hash_chunks(strided.tobytes(), 1024)
