"""The memory phase of spec gpuproof/2 (docs/protocol.md, "Spec v2: memory phase"): the normative NumPy
reference of the table and the walk.

After the last round the prover keeps the last `table_rounds` rounds' C_r resident as the **table** T,
each 1 KiB leaf XORed with a keyed **pad** (so that T has full entropy and a compressed C saves nothing
without recomputing pads), then runs `lanes` independent **lanes** of `steps` steps: each step reads a
whole leaf of T at an address derived from everything the lane read so far and folds all 256 of its words
into the lane's 16-byte state. The final states are committed as an RFC 6962 tree. A verifier re-walks
a few lanes from the raw C leaves (checked against the committed round roots) and the pads; it never needs
the table. Any other backend (kernels/cuda/memory.cu) must reproduce these bytes exactly.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from gpuproof.kernels import merkle
from gpuproof.kernels.errors import InvalidParameter
from gpuproof.kernels.spec import CHUNK_BYTES, ChallengeParams

MEMORY_SPEC = "gpuproof/2-memory"
WORDS_PER_LEAF = CHUNK_BYTES // 4  # 256 uint32 words
PAD_PIECES = 32  # one SHA-256 compression per 32 pad bytes
STATE_BYTES = 16
NONCE_BYTES = 16

_PAD_DOMAIN = b"gpuproof.pad.v2"
_WALK_DOMAIN = b"gpuproof.walk.v2"
_MASK32 = 0xFFFFFFFF
GAMMA = 0x9E3779B9  # per-word key step of the fold
FOLD_MUL = 0x85EBCA6B  # odd: t -> t * FOLD_MUL is a bijection mod 2^32


@dataclass(frozen=True)
class MemoryPlan:
    """The memory phase's public parameters for one challenge; always valid (checked on construction).

    `table_rounds` (R_T): the table is rounds R-R_T .. R-1 of the challenge, in that order;
    `lanes` (L) walk `steps` (S) steps each; `opened` (q) lanes are re-walked by the verifier.
    """

    params: ChallengeParams
    table_rounds: int
    lanes: int
    steps: int
    opened: int

    def __post_init__(self) -> None:
        for name in ("table_rounds", "lanes", "steps", "opened"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise InvalidParameter(f"--{name.replace('_', '-')}", f"must be a positive integer, got {value!r}")
        if self.table_rounds > self.params.rounds:
            raise InvalidParameter("--table-rounds", f"must be at most the {self.params.rounds} rounds, "
                                   f"got {self.table_rounds}")
        if self.table_leaves >= 2**63:
            raise InvalidParameter("--table-rounds", "the table must have fewer than 2^63 leaves")

    @property
    def first_round(self) -> int:
        """The first round kept in the table."""
        return self.params.rounds - self.table_rounds

    @property
    def table_leaves(self) -> int:
        """N: leaves of the table (1 KiB each)."""
        return self.table_rounds * self.params.leaves_per_round

    @property
    def table_bytes(self) -> int:
        return self.table_leaves * CHUNK_BYTES

    @property
    def walk_bytes(self) -> int:
        """Bytes an honest prover reads from the table during the walk: L * S leaves."""
        return self.lanes * self.steps * CHUNK_BYTES

    def locate(self, address: int) -> tuple[int, int]:
        """(round, leaf in that round) of table leaf `address`."""
        per = self.params.leaves_per_round
        return self.first_round + address // per, address % per

    def to_dict(self) -> dict[str, object]:
        return {"spec": MEMORY_SPEC, "table_rounds": self.table_rounds, "lanes": self.lanes,
                "steps": self.steps, "opened": self.opened}


def pad_key(seed: bytes) -> bytes:
    """PK = SHA-256(b"gpuproof.pad.v2" || seed): the 32-byte key of every pad of the challenge."""
    return hashlib.sha256(_PAD_DOMAIN + seed).digest()


def walk_key(seed: bytes, last_root: bytes, nonce: bytes) -> bytes:
    """WK = SHA-256(b"gpuproof.walk.v2" || seed || root_{R-1} || nonce), nonce the verifier's 16 bytes
    sent only after the roots are committed: no lane can start before then."""
    if len(last_root) != 32 or len(nonce) != NONCE_BYTES:
        raise InvalidParameter("nonce", f"expected a 32-byte root and a {NONCE_BYTES}-byte nonce, "
                               f"got {len(last_root)} and {len(nonce)}")
    return hashlib.sha256(_WALK_DOMAIN + seed + last_root + nonce).digest()


def leaf_pad(pk: bytes, round_index: int, leaf: int) -> np.ndarray:
    """The 1 KiB pad of leaf `leaf` of round `round_index`, as 256 little-endian uint32 words.

    Bytes 32j .. 32j+31 (j = 0..31) are D_j = SHA-256(PK || u32le(round) || u32le(leaf) || u32le(j)): a
    44-byte message, one compression. A pad costs 32 compressions to make, and nothing smaller than its
    32 digests (a whole leaf) stands in for it.
    """
    base = hashlib.sha256(pk + struct.pack("<II", round_index, leaf))
    digests = bytearray()
    for j in range(PAD_PIECES):
        h = base.copy()
        h.update(struct.pack("<I", j))
        digests += h.digest()
    return np.frombuffer(bytes(digests), dtype="<u4").astype(np.uint32)


def table_from_rounds(plan: MemoryPlan, cs: Sequence[np.ndarray]) -> np.ndarray:
    """T (N x 256 uint32): the table rounds' C (row-major little-endian, cut in 1 KiB leaves), each leaf
    XORed with its pad. `cs` holds C_r of rounds first_round .. R-1 in order."""
    if len(cs) != plan.table_rounds:
        raise ValueError(f"{len(cs)} rounds of C given, want {plan.table_rounds}")
    pk = pad_key(plan.params.seed)
    per = plan.params.leaves_per_round
    table = np.empty((plan.table_leaves, WORDS_PER_LEAF), dtype=np.uint32)
    for t, c in enumerate(cs):
        words = np.ascontiguousarray(c, dtype="<i4").view("<u4").reshape(per, WORDS_PER_LEAF)
        for leaf in range(per):
            table[t * per + leaf] = words[leaf] ^ leaf_pad(pk, plan.first_round + t, leaf)
    return table


def lane_seeds(wk: bytes, lanes: np.ndarray) -> np.ndarray:
    """Initial states (len(lanes) x 4 uint32): the first 16 bytes of SHA-256(WK || u64le(lane))."""
    out = np.empty((len(lanes), 4), dtype=np.uint32)
    for i, lane in enumerate(lanes):
        out[i] = np.frombuffer(hashlib.sha256(wk + struct.pack("<Q", int(lane))).digest()[:STATE_BYTES], "<u4")
    return out


def addresses(states: np.ndarray, table_leaves: int) -> np.ndarray:
    """The table leaf each lane reads next: (s1 * 2^32 + s0) mod N."""
    both = (states[:, 1].astype(np.uint64) << np.uint64(32)) | states[:, 0].astype(np.uint64)
    return both % np.uint64(table_leaves)


def _rotl(x: np.ndarray, r: int) -> np.ndarray:
    return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def fold(states: np.ndarray, leaves: np.ndarray) -> np.ndarray:
    """f = sum over j of g(w_j ^ (s2 + j * GAMMA)) mod 2^32, g(t) = u ^ (u >> 15) with u = t * FOLD_MUL.

    g is a bijection, so every word of the leaf changes f; keyed by the lane's state, so no summary of a
    leaf smaller than the leaf gives f for every state. `leaves` is (lanes x 256) uint32.
    """
    keys = states[:, 2:3] + np.arange(WORDS_PER_LEAF, dtype=np.uint32) * np.uint32(GAMMA)
    u = (leaves ^ keys) * np.uint32(FOLD_MUL)
    u ^= u >> np.uint32(15)
    return u.sum(axis=1, dtype=np.uint32)


def _quarter_round(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, ...]:
    """ChaCha's quarter round (RFC 8439 2.1): a bijection of the four words."""
    a = a + b; d = _rotl(d ^ a, 16)  # noqa: E702
    c = c + d; b = _rotl(b ^ c, 12)  # noqa: E702
    a = a + b; d = _rotl(d ^ a, 8)  # noqa: E702
    c = c + d; b = _rotl(b ^ c, 7)  # noqa: E702
    return a, b, c, d


def step(states: np.ndarray, leaves: np.ndarray) -> np.ndarray:
    """One walk step of every lane: s0 ^= fold(s, leaf), then two ChaCha quarter rounds over (s0..s3)."""
    f = fold(states, leaves)
    a, b, c, d = states[:, 0] ^ f, states[:, 1], states[:, 2], states[:, 3]
    a, b, c, d = _quarter_round(a, b, c, d)
    a, b, c, d = _quarter_round(a, b, c, d)
    return np.stack([a, b, c, d], axis=1)


def walk(plan: MemoryPlan, table: np.ndarray, wk: bytes, lanes: np.ndarray | None = None) -> np.ndarray:
    """Final states (lanes x 4 uint32) of `lanes` (default all L) walked over the table T."""
    lanes = np.arange(plan.lanes, dtype=np.uint64) if lanes is None else lanes
    states = lane_seeds(wk, lanes)
    for _ in range(plan.steps):
        states = step(states, table[addresses(states, plan.table_leaves)])
    return states


def state_bytes(state: np.ndarray) -> bytes:
    """A lane's 16-byte final state: its four words little-endian."""
    return np.ascontiguousarray(state, dtype="<u4").tobytes()


def lane_tree(states: np.ndarray) -> merkle.MerkleTree:
    """The walk commitment: RFC 6962 tree over the lanes' 16-byte final states, in lane order."""
    return merkle.MerkleTree(merkle.hash_chunks(np.ascontiguousarray(states, dtype="<u4").tobytes(), STATE_BYTES))


@dataclass(frozen=True)
class LaneOpening:
    """One opened lane: its final state with its path in the walk tree, and every leaf it read, in walk
    order, as the raw C_r leaf (before the pad) with its audit path in its round's tree."""

    lane: int
    state: bytes
    path: tuple[bytes, ...]
    leaves: tuple[bytes, ...]
    leaf_paths: tuple[tuple[bytes, ...], ...] = field(default=())

    def to_json(self) -> dict[str, object]:
        return {"lane": self.lane, "state": self.state.hex(), "path": [h.hex() for h in self.path],
                "leaves": [x.hex() for x in self.leaves],
                "leaf_paths": [[h.hex() for h in p] for p in self.leaf_paths]}

    @classmethod
    def from_json(cls, data: object) -> LaneOpening:
        """Parse the wire form; InvalidParameter naming the field when it is not one."""
        if not isinstance(data, dict):
            raise InvalidParameter("lane opening", f"expected an object, got {type(data).__name__}")
        try:
            lane = data["lane"]
            if not isinstance(lane, int) or isinstance(lane, bool) or lane < 0:
                raise InvalidParameter("lane", f"expected a non-negative integer, got {lane!r}")
            return cls(lane=lane, state=bytes.fromhex(data["state"]),
                       path=tuple(bytes.fromhex(h) for h in data["path"]),
                       leaves=tuple(bytes.fromhex(x) for x in data["leaves"]),
                       leaf_paths=tuple(tuple(bytes.fromhex(h) for h in p) for p in data["leaf_paths"]))
        except KeyError as exc:
            raise InvalidParameter("lane opening", f"missing field {exc.args[0]!r}") from None
        except (TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, InvalidParameter):
                raise
            raise InvalidParameter("lane opening", f"a field is not hex or not a list: {exc}") from None


@dataclass
class MemoryProver:
    """The prover's side on the CPU reference: the table, the walk and lane openings (small sizes only)."""

    plan: MemoryPlan
    trees: list[merkle.MerkleTree]  # round trees of the table rounds
    cs: list[np.ndarray]  # C_r of the table rounds
    table: np.ndarray
    states: np.ndarray | None = None
    tree: merkle.MerkleTree | None = None

    @classmethod
    def from_rounds(cls, plan: MemoryPlan, cs: Sequence[np.ndarray]) -> MemoryProver:
        from gpuproof.kernels.reference import round_tree

        return cls(plan, [round_tree(c) for c in cs], list(cs), table_from_rounds(plan, cs))

    def run_walk(self, wk: bytes) -> bytes:
        """Walk every lane; returns the walk root."""
        self.states = walk(self.plan, self.table, wk)
        self.tree = lane_tree(self.states)
        return self.tree.root

    def open(self, lane: int, wk: bytes) -> LaneOpening:
        """Lane `lane` re-walked from its seed, with the raw leaves it read and their paths."""
        assert self.states is not None and self.tree is not None, "run_walk first"
        plan = self.plan
        state = lane_seeds(wk, np.array([lane], dtype=np.uint64))
        leaves, paths = [], []
        for _ in range(plan.steps):
            address = int(addresses(state, plan.table_leaves)[0])
            r, leaf = plan.locate(address)
            t = r - plan.first_round
            words = WORDS_PER_LEAF
            raw = np.ascontiguousarray(self.cs[t].reshape(-1)[leaf * words:(leaf + 1) * words], dtype="<i4").tobytes()
            leaves.append(raw)
            paths.append(tuple(self.trees[t].inclusion_proof(leaf)))
            state = step(state, self.table[address:address + 1])
        assert state_bytes(state[0]) == state_bytes(self.states[lane])
        return LaneOpening(lane=lane, state=state_bytes(self.states[lane]),
                           path=tuple(self.tree.inclusion_proof(lane)), leaves=tuple(leaves),
                           leaf_paths=tuple(paths))


def prover_for(backend: object, plan: MemoryPlan, roots: Sequence[bytes]) -> Any:
    """The prover's side of the memory phase after a backend computed the challenge's `roots`: an object
    with `run_walk(wk) -> walk root` and `open(lane, wk) -> LaneOpening`. On CudaBackend the table lives on
    the device (kernels.cuda_memory.CudaMemoryProver); otherwise (CpuBackend, or any backend without a
    device) it is this module's MemoryProver over the table rounds' C, recomputed from the committed roots
    with the backend's `round_c` where it has one, else the NumPy reference's: host memory, small sizes."""
    from gpuproof.kernels.reference import CpuBackend
    from gpuproof.kernels.spec import prev_root_of

    params = plan.params
    if len(roots) != params.rounds:
        raise InvalidParameter("roots", f"{len(roots)} roots, want {params.rounds}")
    if hasattr(backend, "round_device"):
        from gpuproof.kernels.cuda_memory import CudaMemoryProver

        return CudaMemoryProver(backend, plan, roots)
    engine = backend if hasattr(backend, "round_c") else CpuBackend()
    cs = [engine.round_c(params, r, prev_root_of(list(roots), r))  # type: ignore[attr-defined]
          for r in range(plan.first_round, params.rounds)]
    return MemoryProver.from_rounds(plan, cs)


def run_with_table(backend: object, plan: MemoryPlan) -> tuple[list[bytes], Any]:
    """(roots, prover): the challenge's R roots computed by `backend`, with the table kept as the rounds
    come, so that no round is computed twice (the compute phase's time is the honest card's). On CudaBackend
    the table stays on the device (kernels.cuda_memory.CudaMemoryProver.run); on a backend with `round_c`
    (CpuBackend) the table rounds' C are kept in host memory; otherwise the backend computes the roots and
    `prover_for` recomputes the table rounds."""
    from gpuproof.kernels.reference import round_tree
    from gpuproof.kernels.spec import prev_root_of

    params = plan.params
    if hasattr(backend, "round_device"):
        from gpuproof.kernels.cuda_memory import CudaMemoryProver

        return CudaMemoryProver.run(backend, plan)
    if not hasattr(backend, "round_c"):
        computed: list[bytes] = backend.run(params)  # type: ignore[attr-defined]
        return computed, prover_for(backend, plan, computed)
    roots: list[bytes] = []
    cs, trees = [], []
    for r in range(params.rounds):
        c = backend.round_c(params, r, prev_root_of(roots, r))
        tree = round_tree(c)
        roots.append(tree.root)
        if r >= plan.first_round:
            cs.append(c)
            trees.append(tree)
    return roots, MemoryProver(plan, trees, cs, table_from_rounds(plan, cs))


@dataclass(frozen=True)
class LocalPlay:
    """Everything a local play of the memory phase produced: the round roots, the walk's nonce and root,
    the lanes the verifier drew and their openings."""

    plan: MemoryPlan
    roots: list[bytes]
    nonce: bytes
    walk_root: bytes
    drawn: list[int]
    openings: list[LaneOpening]


def play_local(plan: MemoryPlan, nonce: bytes | None = None, drawn: Sequence[int] | None = None) -> LocalPlay:
    """Play the memory phase on the CPU reference at a small size: the rounds (CpuBackend), the table,
    the walk of all lanes, and openings of `drawn` lanes (default: `plan.opened` drawn with `secrets`).

    The verifier's side is `gpuproof.verifier.memory.judge_memory`; the timing here means nothing.
    """
    import secrets

    from gpuproof.kernels.reference import CpuBackend, round_tree
    from gpuproof.kernels.spec import prev_root_of

    params = plan.params
    backend, roots, cs = CpuBackend(), list[bytes](), list[np.ndarray]()
    for r in range(params.rounds):
        c = backend.round_c(params, r, prev_root_of(roots, r))
        roots.append(round_tree(c).root)
        if r >= plan.first_round:
            cs.append(c)
    prover = MemoryProver.from_rounds(plan, cs)
    nonce = secrets.token_bytes(NONCE_BYTES) if nonce is None else nonce
    wk = walk_key(params.seed, roots[-1], nonce)
    walk_root = prover.run_walk(wk)
    drawn = [secrets.randbelow(plan.lanes) for _ in range(plan.opened)] if drawn is None else list(drawn)
    return LocalPlay(plan, roots, nonce, walk_root, drawn, [prover.open(lane, wk) for lane in drawn])
