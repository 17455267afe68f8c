"""RFC 6962 / RFC 9162 Merkle trees: tree hash, inclusion and consistency proofs, and their checks.

Leaf hash ``SHA-256(0x00 || data)``, interior node ``SHA-256(0x01 || left || right)``, the empty tree hashes
to ``SHA-256("")``. The domain-separation prefixes are what `merkletools` lacks (docs/merkle.md).

Proof construction follows the recursive definitions of RFC 6962 section 2.1 over a tree whose complete,
aligned subtrees are cached level by level; verification follows RFC 9162 sections 2.1.3.2 and 2.1.4.2
and never trusts the prover for a length or an index.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from gpuproof.kernels.errors import ProofError

HASH_BYTES = 32
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()

_sha256 = hashlib.sha256


def leaf_hash(data: bytes | memoryview) -> bytes:
    """RFC 6962 leaf hash: SHA-256(0x00 || data)."""
    h = _sha256(LEAF_PREFIX)
    h.update(data)
    return h.digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node hash: SHA-256(0x01 || left || right)."""
    return _sha256(NODE_PREFIX + left + right).digest()


def _py_hash_chunks(data: bytes | bytearray | memoryview, chunk: int) -> bytes:
    mv = memoryview(data).cast("B")
    if len(mv) % chunk:
        raise ValueError(f"data of {len(mv)} bytes is not a whole number of {chunk}-byte chunks")
    base = _sha256(LEAF_PREFIX)
    out: list[bytes] = []
    append = out.append
    for start in range(0, len(mv), chunk):
        h = base.copy()
        h.update(mv[start:start + chunk])
        append(h.digest())
    return b"".join(out)


def _py_next_level(level: bytes) -> bytes:
    count = len(level) // HASH_BYTES
    out = [_sha256(NODE_PREFIX + level[64 * i:64 * i + 64]).digest() for i in range(count // 2)]
    if count & 1:
        out.append(level[-HASH_BYTES:])
    return b"".join(out)


try:  # the same loops in C over OpenSSL (kernels/_leafhash.c), built by `pip install` where a compiler is
    from gpuproof.kernels import _leafhash as _c  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - exercised where the extension is not built
    _c = None

ACCELERATED = _c is not None


def hash_chunks(data: bytes | bytearray | memoryview, chunk: int) -> bytes:
    """Leaf hashes of `data` cut into `chunk`-byte pieces, concatenated (32 bytes per leaf).

    Precondition: ``len(data) % chunk == 0``. Uses kernels._leafhash when built (the same hashes,
    without a Python call per leaf; tests/kernels/test_merkle.py compares both), else hashlib.
    """
    if _c is not None:
        if not memoryview(data).c_contiguous:
            data = memoryview(data).tobytes()
        return _c.leaf_hashes(data, chunk)
    return _py_hash_chunks(data, chunk)


def _next_level(level: bytes) -> bytes:
    """Pair up the nodes of one level; a lone last node is promoted unchanged (RFC 6962 shape)."""
    return _c.next_level(level) if _c is not None else _py_next_level(level)


def root_of_hashes(hashes: bytes) -> bytes:
    """RFC 6962 tree hash over leaf (or complete-subtree) hashes given concatenated."""
    if len(hashes) % HASH_BYTES:
        raise ValueError(f"{len(hashes)} bytes is not a whole number of 32-byte hashes")
    if not hashes:
        return EMPTY_ROOT
    level = hashes
    while len(level) > HASH_BYTES:
        level = _next_level(level)
    return level


def _largest_pow2_below(n: int) -> int:
    """The largest power of two strictly less than n (n >= 2): RFC 6962's split point."""
    return 1 << ((n - 1).bit_length() - 1)


class TreeProofs:
    """RFC 6962 roots and proofs of a tree of `size` leaves, from the hashes of its complete aligned subtrees
    (`perfect`): a tree kept elsewhere (the gateway's log, whose subtree hashes are rows of its database)
    proves with the same code as one in memory, reading O(log^2 size) hashes for any proof."""

    size: int

    def perfect(self, height: int, index: int) -> bytes:
        """MTH of leaves [index * 2**height, (index + 1) * 2**height), which lie inside the tree."""
        raise NotImplementedError

    @property
    def root(self) -> bytes:
        return self.subtree_hash(0, self.size) if self.size else EMPTY_ROOT

    def leaf_hash(self, index: int) -> bytes:
        self._check_index(index, self.size)
        return self.perfect(0, index)

    def subtree_hash(self, lo: int, hi: int) -> bytes:
        """MTH(D[lo:hi]) for the ranges RFC 6962 proofs use (lo aligned to the subtree's split)."""
        if not 0 <= lo < hi <= self.size:
            raise ValueError(f"subtree [{lo}, {hi}) is not inside a tree of size {self.size}")
        width = hi - lo
        if width & (width - 1) == 0 and lo % width == 0:
            height = width.bit_length() - 1
            return self.perfect(height, lo >> height)
        split = _largest_pow2_below(width)
        return node_hash(self.subtree_hash(lo, lo + split), self.subtree_hash(lo + split, hi))

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """PATH(index, D[0:size]) of RFC 6962 section 2.1.1; `size` defaults to the whole tree."""
        size = self.size if size is None else size
        if not 0 < size <= self.size:
            raise ValueError(f"tree size {size} is not in 1..{self.size}")
        self._check_index(index, size)
        return self._path(index, 0, size)

    def _path(self, index: int, lo: int, hi: int) -> list[bytes]:
        if hi - lo == 1:
            return []
        split = _largest_pow2_below(hi - lo)
        if index < lo + split:
            return self._path(index, lo, lo + split) + [self.subtree_hash(lo + split, hi)]
        return self._path(index, lo + split, hi) + [self.subtree_hash(lo, lo + split)]

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """PROOF(old_size, D[0:new_size]) of RFC 6962 section 2.1.2."""
        new_size = self.size if new_size is None else new_size
        if not 0 <= old_size <= new_size <= self.size:
            raise ValueError(f"need 0 <= old size {old_size} <= new size {new_size} <= {self.size}")
        if old_size == 0 or old_size == new_size:
            return []
        return self._subproof(old_size, 0, new_size, True)

    def _subproof(self, m: int, lo: int, hi: int, complete: bool) -> list[bytes]:
        n = hi - lo
        if m == n:
            return [] if complete else [self.subtree_hash(lo, hi)]
        split = _largest_pow2_below(n)
        if m <= split:
            return self._subproof(m, lo, lo + split, complete) + [self.subtree_hash(lo + split, hi)]
        return self._subproof(m - split, lo + split, hi, False) + [self.subtree_hash(lo, lo + split)]

    @staticmethod
    def _check_index(index: int, size: int) -> None:
        if not 0 <= index < size:
            raise ValueError(f"leaf index {index} is not in 0..{size - 1}")


class MerkleTree(TreeProofs):
    """An RFC 6962 tree over given leaf hashes, keeping every level so any proof is index arithmetic.

    Level 0 holds the leaf hashes; level j holds the hashes of the complete aligned subtrees of 2**j leaves
    (plus a promoted right-border node where a level has an odd count).
    """

    def __init__(self, leaf_hashes: bytes) -> None:
        if len(leaf_hashes) % HASH_BYTES:
            raise ValueError(f"{len(leaf_hashes)} bytes is not a whole number of 32-byte hashes")
        self.size = len(leaf_hashes) // HASH_BYTES
        levels = [bytes(leaf_hashes)]
        while len(levels[-1]) > HASH_BYTES:
            levels.append(_next_level(levels[-1]))
        self._levels = levels

    @classmethod
    def from_leaves(cls, leaves: Sequence[bytes]) -> MerkleTree:
        """A tree over raw leaf data (each entry is hashed with the 0x00 prefix)."""
        return cls(b"".join(leaf_hash(x) for x in leaves))

    @property
    def root(self) -> bytes:
        return self._levels[-1] if self.size else EMPTY_ROOT

    def perfect(self, height: int, index: int) -> bytes:
        return self._levels[height][HASH_BYTES * index:HASH_BYTES * (index + 1)]

    def level(self, height: int) -> bytes:
        """Concatenated hashes of level `height` (0 = leaves)."""
        return self._levels[height]

    def perfect_nodes(self) -> list[tuple[int, int, bytes]]:
        """(height, index, hash) of every complete aligned subtree of 2 or more leaves (what the gateway
        stores of its log's tree)."""
        return [(h, i, self.perfect(h, i)) for h in range(1, len(self._levels)) for i in range(self.size >> h)]


def _decompose(index: int, size: int) -> tuple[int, int]:
    """(inner, border): how many hashes of the inclusion proof of `index` in a tree of `size` leaves lie below
    the point where the leaf's path meets the tree's right border, and how many lie on that border."""
    inner = (index ^ (size - 1)).bit_length()
    return inner, bin(index >> inner).count("1")


def inclusion_proof_length(index: int, size: int) -> int:
    """How many hashes an inclusion proof of `index` in a tree of `size` leaves has."""
    inner, border = _decompose(index, size)
    return inner + border


def _as_hash(value: object, what: str) -> bytes:
    if not isinstance(value, bytes | bytearray) or len(value) != HASH_BYTES:
        got = f"{len(value)} bytes" if isinstance(value, bytes | bytearray) else type(value).__name__
        raise ProofError(f"{what} must be a 32-byte hash, got {got}")
    return bytes(value)


def _chain(seed: bytes, proof: Sequence[bytes], index: int, inner: int, *, left_only: bool = False) -> bytes:
    """Hash `seed` up the tree along `proof`, the one walk both checks share (RFC 9162 2.1.3.2 and 2.1.4.2).

    The first `inner` hashes are siblings below the right border: bit i of `index` says on which side the i-th
    one sits (1: on the left). The rest lie on the border, always on the left. With `left_only`, siblings on
    the right are skipped: what remains is the root of the tree that ends where `index`'s path does (the old
    tree of a consistency proof). Preconditions: the hashes are checked 32-byte values, ``len(proof) >= inner``.
    """
    node = seed
    for i, sibling in enumerate(proof):
        if i >= inner or (index >> i) & 1:
            node = node_hash(sibling, node)
        elif not left_only:
            node = node_hash(node, sibling)
    return node


def _check_size(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProofError(f"{name} must be an integer, got {value!r}")
    return value


def root_from_inclusion_proof(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root that `proof` implies for hash `leaf` at `index` in a tree of `size` (RFC 9162 2.1.3.2).

    Raises ProofError with the reason if the index, the size or the proof's length is wrong.
    """
    _check_size("index", index)
    _check_size("tree size", size)
    if size <= 0:
        raise ProofError(f"tree size must be positive, got {size}")
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is not in 0..{size - 1}")
    inner, border = _decompose(index, size)
    if len(proof) != inner + border:
        raise ProofError(f"proof has {len(proof)} hashes, want {inner + border}")
    path = [_as_hash(p, f"proof hash {i}") for i, p in enumerate(proof)]
    return _chain(_as_hash(leaf, "leaf hash"), path, index, inner)


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes) -> None:
    """Check that hash `leaf` sits at `index` of the tree of `size` whose root is `root`.

    Returns None on success; raises ProofError with the reason otherwise.
    """
    got = root_from_inclusion_proof(index, size, leaf, proof)
    if not hmac.compare_digest(got, _as_hash(root, "root")):
        raise ProofError(f"inclusion proof for leaf {index} of {size} leads to root {got.hex()}, "
                         f"not the committed {bytes(root).hex()}")


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes,
                       proof: Sequence[bytes]) -> None:
    """Check that the tree of `new_size` with `new_root` extends the one of `old_size` with `old_root`.

    RFC 9162 section 2.1.4.2. Returns None on success; raises ProofError with the reason otherwise.
    """
    for name, value in (("old size", old_size), ("new size", new_size)):
        if _check_size(name, value) < 0:
            raise ProofError(f"{name} must be a non-negative integer, got {value!r}")
    old_root = _as_hash(old_root, "old root")
    new_root = _as_hash(new_root, "new root")
    if old_size > new_size:
        raise ProofError(f"old size {old_size} is larger than new size {new_size}")
    if old_size == new_size:
        if proof:
            raise ProofError(f"proof between equal sizes must be empty, got {len(proof)} hashes")
        if not hmac.compare_digest(old_root, new_root):
            raise ProofError("trees of equal size have different roots")
        return
    if old_size == 0:
        if proof:
            raise ProofError(f"proof from the empty tree must be empty, got {len(proof)} hashes")
        return
    if not proof:
        raise ProofError("consistency proof is empty")
    # The proof is the tail of the inclusion proof of leaf old_size - 1 in the new tree, from the level of the
    # largest complete subtree the old tree ends with (`shift`) up; it starts with that subtree's hash unless
    # the old tree is that subtree, whose hash the verifier already holds as the old root.
    inner, border = _decompose(old_size - 1, new_size)
    shift = (old_size & -old_size).bit_length() - 1
    inner -= shift
    seed_given = old_size != 1 << shift
    want = int(seed_given) + inner + border
    if len(proof) != want:
        raise ProofError(f"consistency proof has {len(proof)} hashes, want {want}")
    path = [_as_hash(p, f"proof hash {i}") for i, p in enumerate(proof)]
    seed = path.pop(0) if seed_given else old_root
    mask = (old_size - 1) >> shift
    if not hmac.compare_digest(_chain(seed, path, mask, inner, left_only=True), old_root):
        raise ProofError("consistency proof does not lead to the old root")
    if not hmac.compare_digest(_chain(seed, path, mask, inner), new_root):
        raise ProofError("consistency proof does not lead to the new root")


def level_sizes(leaves: int) -> list[int]:
    """Node counts of every level of an RFC 6962 tree with `leaves` leaves, leaves first, root last."""
    sizes = [leaves]
    while sizes[-1] > 1:
        sizes.append((sizes[-1] + 1) // 2)
    return sizes


def level_layout(leaves: int) -> tuple[list[int], list[int]]:
    """(sizes, offsets) of every level stored one after another in one buffer, in hashes."""
    sizes = level_sizes(leaves)
    offsets = [0]
    for size in sizes[:-1]:
        offsets.append(offsets[-1] + size)
    return sizes, offsets


def tree_from_levels(levels: Sequence[bytes]) -> MerkleTree:
    """A MerkleTree over levels computed elsewhere (the GPU), level 0 first; sizes are checked.

    The hashes are trusted as given: use it to cut proofs from a tree this process built, and verify
    anything that came from elsewhere.
    """
    if not levels:
        raise ValueError("no levels")
    want = level_sizes(len(levels[0]) // HASH_BYTES)
    got = [len(x) // HASH_BYTES for x in levels]
    if got != want or any(len(x) % HASH_BYTES for x in levels):
        raise ValueError(f"level sizes {got} are not those of an RFC 6962 tree, want {want}")
    tree = MerkleTree.__new__(MerkleTree)
    tree.size = want[0]
    tree._levels = [bytes(x) for x in levels]
    return tree
