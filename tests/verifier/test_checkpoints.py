"""Checkpoint commitments: the tree layout against an independent construction, openings, the chain."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from gpuproof.kernels import merkle
from gpuproof.kernels.errors import InvalidParameter, ProofError
from gpuproof.verifier import checkpoints


def state():
    rng = np.random.default_rng(3)
    return {"w": rng.standard_normal((33, 17)).astype(np.float32), "b": np.arange(5, dtype=np.int64),
            "big": rng.integers(0, 255, size=5000, dtype=np.uint8), "be": np.arange(3, dtype=">i4")}


def test_root_matches_an_independent_construction():
    s = state()
    leaves = []
    for name in sorted(s):
        a = np.ascontiguousarray(s[name])
        le = a.astype(a.dtype.newbyteorder("<")) if a.dtype.byteorder == ">" else a
        data = le.tobytes()
        header = {"dtype": le.dtype.str, "name": name, "nbytes": len(data), "shape": list(a.shape)}
        leaves.append(b"gpuproof.tensor.v1\n" + json.dumps(header, sort_keys=True, separators=(",", ":")).encode())
        for i in range(0, len(data), 1024):
            leaves.append(data[i:i + 1024].ljust(1024, b"\0"))
    root, entries = checkpoints.root_cpu(s)
    assert root == merkle.MerkleTree.from_leaves(leaves).root
    assert [e.name for e in entries] == ["b", "be", "big", "w"]
    assert entries[1].dtype == "<i4"  # big-endian input committed little-endian


@pytest.mark.parametrize("piece", [1024, 3072, 8 << 20])
def test_an_uploaded_state_has_the_same_root_from_memory_and_from_a_file(tmp_path, piece):
    """root_of_buffer and root_of_file (the gateway's streamed uploads, read `piece` bytes at a time) give
    the root of root_cpu; a file one byte short is refused with the sizes."""
    s = state()
    root, entries = checkpoints.root_cpu(s)
    upload = checkpoints.state_bytes(s, entries)
    assert checkpoints.root_of_buffer(upload, entries) == root
    path = tmp_path / "state"
    path.write_bytes(upload)
    with open(path, "rb") as fh:
        assert checkpoints.root_of_file(fh, entries, piece=piece) == root
    path.write_bytes(upload[:-1])
    with open(path, "rb") as fh, pytest.raises(ProofError, match="bytes; its manifest says"):
        checkpoints.root_of_file(fh, entries, piece=piece)


def test_any_change_moves_the_root():
    s = state()
    root, _ = checkpoints.root_cpu(s)
    s["w"][3, 4] = np.nextafter(s["w"][3, 4], np.float32(np.inf))
    assert checkpoints.root_cpu(s)[0] != root
    s2 = state()
    s2["renamed"] = s2.pop("b")
    assert checkpoints.root_cpu(s2)[0] != root


@pytest.mark.parametrize("name, index", [("w", 0), ("w", 2), ("big", 4), ("b", 0)])
def test_open_and_verify_one_chunk(name, index):
    s = state()
    root, entries = checkpoints.root_cpu(s)
    chunk, path = checkpoints.open_chunk(s, entries, name, index)
    checkpoints.verify_chunk(root, entries, name, index, chunk, path)
    bad = bytes([chunk[0] ^ 1]) + chunk[1:]
    with pytest.raises(ProofError):
        checkpoints.verify_chunk(root, entries, name, index, bad, path)


def test_bad_requests_are_named():
    s = state()
    root, entries = checkpoints.root_cpu(s)
    with pytest.raises(InvalidParameter, match="chunks 0..2"):
        checkpoints.open_chunk(s, entries, "w", 3)
    with pytest.raises(InvalidParameter, match="no tensor"):
        checkpoints.open_chunk(s, entries, "nope", 0)
    with pytest.raises(InvalidParameter, match="at least one"):
        checkpoints.root_cpu({})


def test_chain_hash_binds_everything():
    root, batch, prev = bytes(32), hashlib.sha256(b"batch").digest(), bytes(range(32))
    h = checkpoints.chain_hash(7, root, batch, prev)
    assert h == hashlib.sha256(b"gpuproof.checkpoint.v1" + (7).to_bytes(8, "little") + root + batch + prev).digest()
    assert checkpoints.chain_hash(8, root, batch, prev) != h
    with pytest.raises(InvalidParameter):
        checkpoints.chain_hash(-1, root, batch, prev)


@pytest.mark.gpu
def test_gpu_root_equals_cpu_root_for_cupy_and_torch():
    import cupy

    s = state()
    want, _ = checkpoints.root_cpu(s)
    got, _ = checkpoints.root_on_gpu({k: cupy.asarray(np.ascontiguousarray(v.astype(v.dtype.newbyteorder("<"))))
                                      for k, v in s.items()})
    assert got == want
    torch = pytest.importorskip("torch")
    t = {"x": torch.randn(300, 7, device="cuda"), "y": torch.randn(9, device="cuda").to(torch.bfloat16),
         "offset": torch.randn(2000, device="cuda")[3:1500]}  # a view at an address not 16-byte aligned
    assert checkpoints.root_on_gpu(t)[0] == checkpoints.root_cpu(t)[0]
