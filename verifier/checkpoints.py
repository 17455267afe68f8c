"""Checkpoint commitments for training work (issue 7, the commitment part): a named state committed as
an RFC 6962 tree of 1 KiB chunks, so that one tensor or one chunk can be opened alone.

Layout (spec "gpuproof.checkpoint/1", docs/protocol.md will carry it with the checkpoint flow):
- tensors in name order; for each, one header leaf, the canonical JSON
  {"dtype": ..., "name": ..., "nbytes": ..., "shape": [...]} after the line "gpuproof.tensor.v1", then
  its little-endian bytes cut into 1 KiB chunks, the last one zero-padded (nbytes says where data ends);
- leaf hash SHA-256(0x00 || leaf), nodes SHA-256(0x01 || l || r): the same tree as challenge rounds, so
  the CUDA kernels hash it where the tensors already live (`root_on_gpu`);
- a commitment binds the step, the root, the hash of the batch the steps used and the previous
  commitment's hash (a hash chain): SHA-256("gpuproof.checkpoint.v1" || u64le(step) || root ||
  batch_hash || prev_hash).

NumPy arrays, CuPy arrays and PyTorch tensors are accepted (PyTorch and CuPy through DLPack; neither is
required). bfloat16 has no NumPy type: its 2-byte words are committed as they are, with dtype "bfloat16".
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
from gpuproof.kernels import merkle
from gpuproof.kernels.errors import InvalidParameter, ProofError

CHUNK = 1024
SPEC = "gpuproof.checkpoint/1"
_HEADER_PREFIX = b"gpuproof.tensor.v1\n"
_CHAIN_DOMAIN = b"gpuproof.checkpoint.v1"


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor sits in the tree: its header leaf, then `chunks` data leaves."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    header_leaf: int

    @property
    def chunks(self) -> int:
        return -(-self.nbytes // CHUNK)

    def header(self) -> bytes:
        return _header(self.name, self.dtype, self.shape, self.nbytes)

    def header_hash(self) -> bytes:
        return _header_hash(self.name, self.dtype, self.shape, self.nbytes)

    def chunk_leaf(self, index: int) -> int:
        if not 0 <= index < self.chunks:
            raise InvalidParameter("chunk", f"tensor {self.name!r} has chunks 0..{self.chunks - 1}, got {index}")
        return self.header_leaf + 1 + index


@functools.lru_cache(maxsize=4096)
def _header(name: str, dtype: str, shape: tuple[int, ...], nbytes: int) -> bytes:
    body = json.dumps({"dtype": dtype, "name": name, "nbytes": nbytes, "shape": list(shape)}, sort_keys=True,
                      separators=(",", ":"))
    return _HEADER_PREFIX + body.encode()


@functools.lru_cache(maxsize=4096)
def _header_hash(name: str, dtype: str, shape: tuple[int, ...], nbytes: int) -> bytes:
    return merkle.leaf_hash(_header(name, dtype, shape, nbytes))  # the same few headers at every checkpoint


def _dtype_name(x: Any) -> str:
    module = type(x).__module__.split(".")[0]
    if module == "torch":
        return str(x.dtype).replace("torch.", "")
    dtype = np.dtype(x.dtype)
    return dtype.newbyteorder("<").str if dtype.byteorder not in ("|",) else dtype.str


def _host_view(x: Any) -> memoryview:
    """The tensor's little-endian bytes, row-major, from the host, without a copy where possible."""
    module = type(x).__module__.split(".")[0]
    if module == "torch":
        t = x.detach().contiguous().cpu()
        if str(t.dtype) == "torch.bfloat16":
            import torch

            t = t.view(torch.int16)
        x = t.numpy()
    elif module == "cupy":
        x = x.get()
    a = np.ascontiguousarray(np.asarray(x))
    if a.dtype.byteorder == ">" or (a.dtype.byteorder == "=" and not np.little_endian):
        a = a.astype(a.dtype.newbyteorder("<"))
    return memoryview(a.reshape(-1).view(np.uint8))  # type: ignore[arg-type]


def _host_bytes(x: Any) -> bytes:
    return bytes(_host_view(x))


def manifest(state: Mapping[str, Any]) -> list[TensorEntry]:
    """The tensors' places in the tree, in name order."""
    if not state:
        raise InvalidParameter("state", "a checkpoint needs at least one tensor")
    entries, leaf = [], 0
    for name in sorted(state):
        if not isinstance(name, str) or not name or len(name) > 512:
            raise InvalidParameter("state", f"tensor names must be 1-512 characters, got {name!r}")
        x = state[name]
        shape = tuple(int(d) for d in x.shape)
        nbytes = int(np.prod(shape, dtype=np.int64)) * int(x.element_size() if hasattr(x, "element_size")
                                                           else np.dtype(x.dtype).itemsize)
        entry = TensorEntry(name, _dtype_name(x), shape, nbytes, leaf)
        entries.append(entry)
        leaf += 1 + entry.chunks
    return entries


def _tensor_leaves(e: TensorEntry, data: memoryview) -> list[bytes]:
    """The header leaf hash and the data chunks' leaf hashes of one tensor, from its bytes."""
    if len(data) != e.nbytes:
        raise InvalidParameter("state", f"tensor {e.name!r} has {len(data)} bytes, its manifest {e.nbytes}")
    out = [e.header_hash()]
    whole = len(data) - len(data) % CHUNK
    out.append(merkle.hash_chunks(data[:whole], CHUNK))  # no copy of the full chunks
    if whole < len(data):
        out.append(merkle.leaf_hash(bytes(data[whole:]) + bytes(CHUNK - (len(data) - whole))))
    return out


def leaf_hashes_cpu(state: Mapping[str, Any], entries: Sequence[TensorEntry]) -> bytes:
    return b"".join(h for e in entries for h in _tensor_leaves(e, _host_view(state[e.name])))


def state_bytes(state: Mapping[str, Any], entries: Sequence[TensorEntry]) -> bytes:
    """The state as one buffer: each tensor's little-endian bytes in manifest order (the upload format)."""
    return b"".join(_host_view(state[e.name]) for e in entries)


def root_of_buffer(buf: bytes | memoryview, entries: Sequence[TensorEntry]) -> bytes:
    """The root of a state given as `state_bytes` (what a provider uploads), checked against its manifest."""
    view = memoryview(buf).cast("B")
    at = 0

    def read(n: int) -> memoryview:  # slices of the buffer: no copy of the full chunks
        nonlocal at
        at += n
        return view[at - n:at]

    return _root_of_reads(read, len(view), entries, piece=max(len(view), CHUNK))


def root_of_file(fh: BinaryIO, entries: Sequence[TensorEntry], piece: int = 8 << 20) -> bytes:
    """`root_of_buffer` of an open file's contents, read `piece` bytes at a time (an upload streamed to disk
    is checked without holding it in memory)."""
    return _root_of_reads(fh.read, os.fstat(fh.fileno()).st_size, entries, piece)


def _root_of_reads(read: Callable[[int], bytes | memoryview], size: int, entries: Sequence[TensorEntry],
                   piece: int) -> bytes:
    """The state root from `size` bytes delivered by `read(n)`, each tensor's full chunks at most `piece`
    bytes at a time, its last partial chunk zero-padded (the leaves of leaf_hashes_cpu)."""
    expected = sum(e.nbytes for e in entries)
    if size != expected:
        raise ProofError(f"the state is {size} bytes; its manifest says {expected}")
    piece = max(CHUNK, piece - piece % CHUNK)
    hashes = []
    for e in entries:
        hashes.append(e.header_hash())
        left = e.nbytes
        while left >= CHUNK:
            data = read(min(left - left % CHUNK, piece))
            if not data:
                raise ProofError(f"the state ended inside tensor {e.name!r}")
            hashes.append(merkle.hash_chunks(memoryview(data), CHUNK))
            left -= len(data)
        if left:
            hashes.append(merkle.leaf_hash(bytes(read(left)) + bytes(CHUNK - left)))
    return merkle.root_of_hashes(b"".join(hashes))


def state_from_buffer(buf: bytes | memoryview, entries: Sequence[TensorEntry]) -> dict[str, np.ndarray]:
    """NumPy arrays from an uploaded buffer (dtypes NumPy lacks, such as bfloat16, stay raw bytes)."""
    out, at = {}, 0
    for e in entries:
        raw = np.frombuffer(buf, dtype=np.uint8, count=e.nbytes, offset=at)
        at += e.nbytes
        try:
            out[e.name] = raw.view(np.dtype(e.dtype)).reshape(e.shape).copy()
        except TypeError:
            out[e.name] = raw.copy()
    return out


def manifest_json(entries: Sequence[TensorEntry]) -> list[dict[str, Any]]:
    return [{"name": e.name, "dtype": e.dtype, "shape": list(e.shape), "nbytes": e.nbytes} for e in entries]


_DTYPE_RE = re.compile(r"^[<>|=]?[a-zA-Z][a-zA-Z0-9]{0,15}$")
MAX_TENSORS = 4096


def manifest_from_json(items: Sequence[Mapping[str, Any]]) -> list[TensorEntry]:
    """A manifest received over the network, validated: names sorted and unique, sizes consistent."""
    if not 1 <= len(items) <= MAX_TENSORS:
        raise InvalidParameter("manifest", f"expected 1 to {MAX_TENSORS} tensors, got {len(items)}")
    entries: list[TensorEntry] = []
    leaf = 0
    for item in items:
        try:
            name, dtype, shape, nbytes = item["name"], item["dtype"], item["shape"], item["nbytes"]
        except (KeyError, TypeError):
            raise InvalidParameter("manifest", "each tensor needs name, dtype, shape and nbytes") from None
        if not isinstance(name, str) or not 1 <= len(name) <= 512:
            raise InvalidParameter("manifest", f"tensor names must be 1-512 characters, got {name!r}")
        if entries and name <= entries[-1].name:
            raise InvalidParameter("manifest", f"tensor names must be sorted and unique: {name!r} after "
                                   f"{entries[-1].name!r}")
        if not isinstance(dtype, str) or not _DTYPE_RE.match(dtype):
            raise InvalidParameter("manifest", f"tensor {name!r}: bad dtype {dtype!r}")
        if (not isinstance(shape, list | tuple) or len(shape) > 32
                or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**40 for d in shape)):
            raise InvalidParameter("manifest", f"tensor {name!r}: shape must be at most 32 sizes >= 0")
        if not isinstance(nbytes, int) or isinstance(nbytes, bool) or not 0 <= nbytes < 2**44:
            raise InvalidParameter("manifest", f"tensor {name!r}: bad nbytes {nbytes!r}")
        count = int(np.prod(shape, dtype=object)) if shape else 1
        try:
            itemsize = np.dtype(dtype).itemsize
        except TypeError:
            itemsize = None  # a dtype NumPy lacks (bfloat16): nbytes must still be a multiple of the count
        if (itemsize is not None and count * itemsize != nbytes) or (itemsize is None and count and nbytes % count):
            raise InvalidParameter("manifest", f"tensor {name!r}: {nbytes} bytes do not fit shape {list(shape)} "
                                   f"of {dtype}")
        entry = TensorEntry(name, dtype, tuple(shape), nbytes, leaf)
        entries.append(entry)
        leaf += 1 + entry.chunks
    return entries


def leaf_count(entries: Sequence[TensorEntry]) -> int:
    return entries[-1].header_leaf + 1 + entries[-1].chunks


def root_cpu(state: Mapping[str, Any]) -> tuple[bytes, list[TensorEntry]]:
    """The checkpoint's root, hashing on the host."""
    entries = manifest(state)
    return merkle.root_of_hashes(leaf_hashes_cpu(state, entries)), entries


def root_on_gpu(state: Mapping[str, Any], device: int = 0) -> tuple[bytes, list[TensorEntry]]:
    """The same root, hashed on the GPU where the tensors live (CuPy arrays or CUDA PyTorch tensors): the
    manifest and header leaves here, the chunks and levels by gpuproof.kernels.cuda_checkpoints."""
    from gpuproof.kernels.cuda_checkpoints import state_root

    entries = manifest(state)
    root = state_root([state[e.name] for e in entries], [merkle.leaf_hash(e.header()) for e in entries],
                      [(e.header_leaf, e.chunks) for e in entries], leaf_count(entries), CHUNK, device)
    return root, entries


def chain_hash(step: int, root: bytes, batch_hash: bytes, prev_hash: bytes) -> bytes:
    """The commitment's own hash, which the next commitment chains on."""
    if not 0 <= step < 2**64:
        raise InvalidParameter("step", f"must be in 0..2**64-1, got {step}")
    for name, value in (("root", root), ("batch_hash", batch_hash), ("prev_hash", prev_hash)):
        if len(value) != 32:
            raise InvalidParameter(name, f"expected 32 bytes, got {len(value)}")
    return hashlib.sha256(_CHAIN_DOMAIN + struct.pack("<Q", step) + root + batch_hash + prev_hash).digest()


def open_chunk(state: Mapping[str, Any], entries: Sequence[TensorEntry], name: str,
               index: int) -> tuple[bytes, list[bytes]]:
    """Chunk `index` of tensor `name` (zero-padded to 1 KiB) and its audit path to the root."""
    by_name = {e.name: e for e in entries}
    if name not in by_name:
        raise InvalidParameter("name", f"no tensor {name!r} in the checkpoint")
    entry = by_name[name]
    leaf = entry.chunk_leaf(index)
    data = _host_bytes(state[name])
    chunk = data[index * CHUNK:(index + 1) * CHUNK]
    chunk += bytes(CHUNK - len(chunk))
    tree = merkle.MerkleTree(leaf_hashes_cpu(state, entries))
    return chunk, tree.inclusion_proof(leaf)


def open_chunks(state: Mapping[str, Any], entries: Sequence[TensorEntry],
                wanted: Sequence[tuple[str, int]]) -> list[tuple[str, int, bytes, list[bytes]]]:
    """Several chunks with their audit paths, hashing the state once."""
    by_name = {e.name: e for e in entries}
    tree = merkle.MerkleTree(leaf_hashes_cpu(state, entries))
    out = []
    for name, index in wanted:
        if name not in by_name:
            raise InvalidParameter("name", f"no tensor {name!r} in the checkpoint")
        leaf = by_name[name].chunk_leaf(index)
        data = _host_view(state[name])[index * CHUNK:(index + 1) * CHUNK]
        out.append((name, index, bytes(data) + bytes(CHUNK - len(data)), tree.inclusion_proof(leaf)))
    return out


def verify_chunk(root: bytes, entries: Sequence[TensorEntry], name: str, index: int, chunk: bytes,
                 path: Sequence[bytes]) -> None:
    """Check an opened chunk against a committed root; raises ProofError with the reason."""
    by_name = {e.name: e for e in entries}
    if name not in by_name:
        raise ProofError(f"no tensor {name!r} in the manifest")
    if len(chunk) != CHUNK:
        raise ProofError(f"a chunk is {CHUNK} bytes, got {len(chunk)}")
    total = leaf_count(entries)
    merkle.verify_inclusion(by_name[name].chunk_leaf(index), total, merkle.leaf_hash(chunk), path, root)


ZERO = bytes(32)


@dataclass(frozen=True)
class CheckpointCommitment:
    step: int
    root: bytes
    batch_hash: bytes
    prev_hash: bytes
    hash: bytes
    manifest: tuple[TensorEntry, ...]

    def to_json(self) -> dict[str, Any]:
        return {"step": self.step, "root": self.root.hex(), "batch_hash": self.batch_hash.hex(),
                "prev_hash": self.prev_hash.hex(), "hash": self.hash.hex(),
                "manifest": manifest_json(self.manifest)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CheckpointCommitment:
        """A commitment received over the network, fields and manifest validated (InvalidParameter)."""
        try:
            fields = {k: bytes.fromhex(data[k]) for k in ("root", "batch_hash", "prev_hash", "hash")}
            step = int(data["step"])
            manifest = tuple(manifest_from_json(data["manifest"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidParameter("commitment", f"malformed: {exc}") from None
        return cls(step=step, manifest=manifest, **fields)


def batch_hash(batches: Sequence[np.ndarray | Sequence[int]]) -> bytes:
    """SHA-256 over the steps' batch indices, in order, as little-endian int64."""
    h = hashlib.sha256(b"gpuproof.batches.v1")
    for b in batches:
        arr = np.ascontiguousarray(np.asarray(b, dtype="<i8"))
        h.update(len(arr).to_bytes(8, "little"))
        h.update(arr.tobytes())
    return h.digest()


@dataclass(frozen=True)
class Opened:
    """One opened chunk of a committed state, with its audit path to the root."""

    name: str
    index: int
    chunk: bytes
    path: tuple[bytes, ...]
