"""Launch plans of one round (spec gpuproof/1 or /2) on a GPU: which step runs on which stream, over which range.

Pure Python (no CuPy), so that a plan is checked without a GPU: kernels/cuda_backend.py runs a plan with
CuPy and cuBLAS; tests/support/cuda_emu.py runs the same plan with the kernel source compiled for the
host, in random orders that its streams and events allow, and compares the roots with the reference.

Two plans:
- sequential (pieces=1, the default): round_key, gen A_r, one GEMM, leaf hashes, the tree, on stream 0.
- pipelined (pieces=P >= 2): A_r and C_r are cut into P row pieces whose leaves are aligned subtrees.
  Stream 0 generates and multiplies piece j while stream 1 hashes piece j-1 and builds its subtree; the
  levels above the pieces and the root follow on stream 1, and stream 0 waits for the root before the
  next round (whose key depends on it). The tree's latency-bound upper levels overlap the GEMM instead
  of idling the GPU after it (docs/cuda.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from gpuproof.kernels import merkle
from gpuproof.kernels.spec import ChallengeParams, definition

MAX_LEVELS_PER_LAUNCH = 9  # a block reduces 512 nodes: 9 levels at most
DEFAULT_LEVELS_PER_LAUNCH = 6  # faster than 9 in every H200 run (docs/performance.md, "Kernel variants")
LEVEL_NODES_PER_BLOCK = 512
M_ALIGN = 16  # rows of A and C are padded to this: cuBLAS int8 wants M multiples of 4; 16 is the safe choice
GEN_THREADS = 256  # gen_nibbles, gen_bytes: one thread per Philox block (64 values in v1, 32 in v2)
LEAF_CHUNKS_PER_BLOCK = 128  # leaf_hash_1k: 4 warps x 32 chunks
MAIN, HASH = 0, 1  # streams: the caller's stream, the backend's hashing stream
ROOT_EVENT = -1  # event ids: >= 0 for "piece j multiplied", ROOT_EVENT for "root_r written"


def values_per_block(spec: str) -> int:
    """Values one Philox block (4 raw words) gives in `spec`: 64 nibbles (v1) or 32 bytes (v2)."""
    return definition(spec).values_per_block


def gen_grid(philox_blocks: int) -> int:
    """Blocks of a gen_nibbles or gen_bytes launch over `philox_blocks` Philox blocks."""
    return min(-(-philox_blocks // GEN_THREADS), 2**31 - 1)


def leaf_grid(chunks: int) -> int:
    """Blocks of a leaf_hash_1k launch over `chunks` 1 KiB chunks."""
    return -(-chunks // LEAF_CHUNKS_PER_BLOCK)


@dataclass(frozen=True)
class RoundKey:
    """Philox key of A_r from SHA-256 over (seed, r, roots[r]) on the device."""
    stream: int


@dataclass(frozen=True)
class Gen:
    """Rows [r0, r1) of A_r."""
    stream: int
    r0: int
    r1: int


@dataclass(frozen=True)
class Gemm:
    """Rows [r0, r1) of C_r = A_r @ B.T."""
    stream: int
    r0: int
    r1: int


@dataclass(frozen=True)
class Leaves:
    """Leaf hashes [a, b) of C_r's 1 KiB chunks into level 0."""
    stream: int
    a: int
    b: int


@dataclass(frozen=True)
class Levels:
    """Levels start+1 .. start+count above nodes [first, end) of level `start`; `root`: also copy the root."""
    stream: int
    start: int
    count: int
    first: int
    end: int
    root: bool = False

    @property
    def blocks(self) -> int:
        return -(-(self.end - self.first) // LEVEL_NODES_PER_BLOCK)


@dataclass(frozen=True)
class CopyRoot:
    """A one-leaf tree: the leaf hash is the root."""
    stream: int


@dataclass(frozen=True)
class Record:
    stream: int
    event: int


@dataclass(frozen=True)
class Wait:
    stream: int
    event: int


Step = RoundKey | Gen | Gemm | Leaves | Levels | CopyRoot | Record | Wait


@dataclass(frozen=True)
class Geometry:
    """Sizes of one challenge as the device sees them: m rows of C count, m_pad rows are computed."""
    m: int
    m_pad: int
    chunks_per_row: int

    @classmethod
    def of(cls, params: ChallengeParams) -> Geometry:
        return cls(params.m, -(-params.m // M_ALIGN) * M_ALIGN, params.chunks_per_row)

    @property
    def leaves(self) -> int:
        return self.m * self.chunks_per_row


def tree_steps(stream: int, leaves: int, start: int, first: int, end: int, top: int,
               per_launch: int, root: bool) -> list[Step]:
    """Launches that build levels start+1 .. top above nodes [first, end) of level `start`.

    `first` must be a multiple of 2**(top - start); `end` a multiple of it or the level's end.
    """
    if not 1 <= per_launch <= MAX_LEVELS_PER_LAUNCH:
        raise ValueError(f"levels per launch must be in 1..{MAX_LEVELS_PER_LAUNCH}, got {per_launch}")
    height = len(merkle.level_layout(leaves)[0]) - 1
    steps: list[Step] = []
    while start < top:
        count = min(per_launch, top - start)
        last = start + count == top
        steps.append(Levels(stream, start, count, first, end, root=root and last and top == height))
        first, end = first >> count, -(-end // (1 << count))
        start += count
    return steps


def sequential_plan(geo: Geometry, per_launch: int = DEFAULT_LEVELS_PER_LAUNCH) -> list[Step]:
    """One round on one stream: the launches the backend made before pipelining (the default)."""
    height = len(merkle.level_layout(geo.leaves)[0]) - 1
    steps: list[Step] = [RoundKey(MAIN), Gen(MAIN, 0, geo.m_pad), Gemm(MAIN, 0, geo.m_pad),
                         Leaves(MAIN, 0, geo.leaves)]
    if height == 0:
        steps.append(CopyRoot(MAIN))
    steps += tree_steps(MAIN, geo.leaves, 0, 0, geo.leaves, height, per_launch, root=True)
    return steps


def piece_rows(geo: Geometry, pieces: int, row_align: int) -> int:
    """Rows per piece for a pipelined plan of about `pieces` pieces; 0 when the round is too small to cut.

    A piece's leaves must form an aligned subtree (a power of two of leaves, starting at a multiple of
    it) and its rows a multiple of `row_align` (cuBLAS); the last piece takes what is left.
    """
    if pieces < 2:
        return 0
    leaves = geo.leaves
    span = 1 << max(0, (-(-leaves // pieces) - 1).bit_length())  # the power of two >= leaves / pieces
    span = max(span, geo.chunks_per_row * row_align)
    rows = span // geo.chunks_per_row
    return rows if rows < geo.m else 0


def pipelined_plan(geo: Geometry, pieces: int, row_align: int,
                   per_launch: int = DEFAULT_LEVELS_PER_LAUNCH) -> list[Step]:
    """One round cut into row pieces over two streams (see the module docstring); sequential if too small."""
    rows = piece_rows(geo, pieces, row_align)
    if rows == 0:
        return sequential_plan(geo, per_launch)
    span = rows * geo.chunks_per_row
    sub = span.bit_length() - 1  # height of a piece's subtree
    height = len(merkle.level_layout(geo.leaves)[0]) - 1
    steps: list[Step] = [RoundKey(MAIN)]
    for j, r0 in enumerate(range(0, geo.m, rows)):
        r1 = min(r0 + rows, geo.m)
        r1_pad = geo.m_pad if r1 == geo.m else r1
        steps += [Gen(MAIN, r0, r1_pad), Gemm(MAIN, r0, r1_pad), Record(MAIN, j), Wait(HASH, j)]
        a, b = r0 * geo.chunks_per_row, r1 * geo.chunks_per_row
        steps.append(Leaves(HASH, a, b))
        steps += tree_steps(HASH, geo.leaves, 0, a, b, sub, per_launch, root=False)
    steps += tree_steps(HASH, geo.leaves, sub, 0, -(-geo.leaves // span), height, per_launch, root=True)
    steps += [Record(HASH, ROOT_EVENT), Wait(MAIN, ROOT_EVENT)]
    return steps


def round_plan(geo: Geometry, pieces: int, row_align: int,
               per_launch: int = DEFAULT_LEVELS_PER_LAUNCH) -> list[Step]:
    return pipelined_plan(geo, pieces, row_align, per_launch) if pieces > 1 else sequential_plan(geo, per_launch)
