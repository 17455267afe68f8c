#!/usr/bin/env python3
"""CPU cost of checking the memory phase of a Hopper-sized spec v2 challenge, on one core.

    python bench/memory_verify_bench.py [--repeats 3]

The verifier's work does not depend on what the table holds, only on the shapes: q opened lanes of S steps,
each step a 1 KiB leaf hashed, its audit path in a round tree of m * n / 256 leaves (18 hashes at m = n =
8192), its 32-digest pad and the fold; then each lane's path in the walk tree of L lanes. So the bench
builds the real h200 plan (m = n = 8192, k = 32768, R = 578, a 506-round table, L lanes of 64 steps) with
random C leaves made on demand, walks the opened lanes as a prover would, and commits them in *sparse*
RFC 6962 trees (every leaf no lane visits has one default hash), whose paths have exactly the real
lengths. Then it times `verifier.memory.check_lanes`, BLAS and NumPy held to one thread.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import time
from functools import cache
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from gpuproof.kernels import memory, merkle  # noqa: E402
from gpuproof.kernels.memory import LaneOpening  # noqa: E402
from gpuproof.verifier import memory as vm  # noqa: E402
from gpuproof.verifier.profiles import load_profiles  # noqa: E402
from gpuproof.verifier.timing import TimingConfig, size_challenge  # noqa: E402


class SparseTree:
    """An RFC 6962 tree of `size` leaves, all equal to `default` except those in `leaves` (index -> hash)."""

    def __init__(self, size: int, leaves: dict[int, bytes], default: bytes) -> None:
        self.size, self.leaves, self.default = size, leaves, default
        self.keys = sorted(leaves)

        @cache
        def empty(width: int) -> bytes:  # MTH of `width` default leaves
            if width == 1:
                return default
            split = 1 << ((width - 1).bit_length() - 1)
            return merkle.node_hash(empty(split), empty(width - split))

        self.empty = empty
        self.memo: dict[tuple[int, int], bytes] = {}

    def _any(self, lo: int, hi: int) -> bool:
        i = int(np.searchsorted(self.keys, lo))
        return i < len(self.keys) and self.keys[i] < hi

    def mth(self, lo: int, hi: int) -> bytes:
        if not self._any(lo, hi):
            return self.empty(hi - lo)
        if hi - lo == 1:
            return self.leaves[lo]
        if (lo, hi) not in self.memo:
            split = lo + (1 << ((hi - lo - 1).bit_length() - 1))
            self.memo[(lo, hi)] = merkle.node_hash(self.mth(lo, split), self.mth(split, hi))
        return self.memo[(lo, hi)]

    @property
    def root(self) -> bytes:
        return self.mth(0, self.size)

    def path(self, index: int) -> list[bytes]:
        out: list[bytes] = []
        lo, hi = 0, self.size
        while hi - lo > 1:
            split = lo + (1 << ((hi - lo - 1).bit_length() - 1))
            if index < split:
                out.append(self.mth(split, hi))
                hi = split
            else:
                out.append(self.mth(lo, split))
                lo = split
        return out[::-1]


LAST: dict[str, object] = {}  # the last round, made whole: the walk key binds its root


def c_leaf(round_index: int, leaf: int) -> bytes:
    """A random-looking 1 KiB leaf of C_r, made on demand (the verifier never checks C's arithmetic here)."""
    if LAST.get("round") == round_index:
        return LAST["c"][leaf * 1024:(leaf + 1) * 1024]  # type: ignore[index]
    seed = int.from_bytes(hashlib.sha256(b"bench" + round_index.to_bytes(4, "little") + leaf.to_bytes(8, "little"))
                          .digest()[:8], "little")
    return np.random.default_rng(seed).integers(-2**21, 2**21, size=256, dtype=np.int32).astype("<i4").tobytes()


def build(opened: int, seed: int = 1):
    profile = load_profiles()["h200"]
    params = vm.size_for_memory(size_challenge(bytes(range(32)), profile, TimingConfig()), profile)
    plan = vm.plan_memory(params, profile)
    rng = np.random.default_rng(seed)
    last_c = rng.integers(-2**21, 2**21, size=params.leaves_per_round * 256, dtype=np.int32).astype("<i4").tobytes()
    last_tree = merkle.MerkleTree(merkle.hash_chunks(last_c, 1024))
    LAST.update({"round": params.rounds - 1, "c": last_c})
    nonce, last_root = rng.bytes(16), last_tree.root
    wk = memory.walk_key(params.seed, last_root, nonce)
    pk = memory.pad_key(params.seed)
    drawn = [int(x) for x in rng.integers(0, plan.lanes, size=opened)]
    states = memory.lane_seeds(wk, np.array(drawn, dtype=np.uint64))
    visits: list[list[tuple[int, int]]] = [[] for _ in drawn]
    for _ in range(plan.steps):  # the prover's walk of the opened lanes only
        words = np.empty((opened, 256), dtype=np.uint32)
        for i, address in enumerate(memory.addresses(states, plan.table_leaves).tolist()):
            r, leaf = plan.locate(address)
            visits[i].append((r, leaf))
            words[i] = np.frombuffer(c_leaf(r, leaf), "<u4") ^ memory.leaf_pad(pk, r, leaf)
        states = memory.step(states, words)
    per_round: dict[int, dict[int, bytes]] = {}
    for lane_visits in visits:
        for r, leaf in lane_visits:
            per_round.setdefault(r, {})[leaf] = merkle.leaf_hash(c_leaf(r, leaf))
    default = merkle.leaf_hash(bytes(1024))
    trees: dict[int, SparseTree | merkle.MerkleTree] = {
        r: SparseTree(params.leaves_per_round, leaves, default) for r, leaves in per_round.items()}
    trees[params.rounds - 1] = last_tree
    roots = [trees[r].root if r in trees else rng.bytes(32) for r in range(params.rounds)]
    lane_tree = SparseTree(plan.lanes, {lane: merkle.leaf_hash(memory.state_bytes(s))
                                        for lane, s in zip(drawn, states, strict=True)}, merkle.leaf_hash(bytes(16)))
    openings = [LaneOpening(lane=lane, state=memory.state_bytes(state), path=tuple(lane_tree.path(lane)),
                            leaves=tuple(c_leaf(r, leaf) for r, leaf in lane_visits),
                            leaf_paths=tuple(tuple(path_of(trees[r], leaf)) for r, leaf in lane_visits))
                for lane, state, lane_visits in zip(drawn, states, visits, strict=True)]
    return plan, roots, nonce, lane_tree.root, drawn, openings


def path_of(tree: SparseTree | merkle.MerkleTree, leaf: int) -> list[bytes]:
    return tree.path(leaf) if isinstance(tree, SparseTree) else tree.inclusion_proof(leaf)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=2)
    args = parser.parse_args()
    from threadpoolctl import threadpool_limits

    print("| opened lanes q | steps S | leaves checked | round-tree path | walk-tree path | lanes L | "
          "check_lanes s (median) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    with threadpool_limits(1):
        for opened in (32, 64):
            t0 = time.perf_counter()
            plan, roots, nonce, walk_root, drawn, openings = build(opened, args.seed)
            built = time.perf_counter() - t0
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                vm.check_lanes(plan, roots, nonce, walk_root, drawn, openings)
                times.append(time.perf_counter() - t0)
            print(f"| {opened} | {plan.steps} | {opened * plan.steps} | {len(openings[0].leaf_paths[0])} | "
                  f"{len(openings[0].path)} | {plan.lanes} | {statistics.median(times):.3f} |", flush=True)
            print(f"  (opened lanes built in {built:.1f} s)", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
