"""The memory phase on a GPU (kernels/cuda/memory.cu through CuPy): table pads and the walk.

Import cupy only inside `MemoryKernels`; the grid arithmetic here is shared with the host emulation
(tests/support/memory_emu.py) so both launch the same way. The NumPy twin is kernels/memory.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from typing import Any

import numpy as np
from gpuproof.kernels import memory, merkle
from gpuproof.kernels.spec import CHUNK_BYTES

PAD_THREADS = 256
WALK_WARPS = 8  # MEM_WARPS in memory.cu
WALK_THREADS = 32 * WALK_WARPS


def pad_grid(n_leaves: int) -> int:
    """Blocks of `table_pad`: one thread per 32-byte digest, 32 per leaf."""
    return -(-32 * n_leaves // PAD_THREADS)


def walk_grid(n_lanes: int) -> int:
    """Blocks of `walk`: one warp per lane."""
    return -(-n_lanes // WALK_WARPS)


def key_words(key32: bytes) -> np.ndarray:
    """A 32-byte key as the 8 little-endian uint32 words the kernels take."""
    return np.frombuffer(key32, dtype="<u4").astype(np.uint32)


class MemoryKernels:
    """memory.cu compiled once per device with cupy.RawModule; launchers over CuPy arrays."""

    def __init__(self, device: int = 0) -> None:
        import cupy

        self.cupy = cupy
        with cupy.cuda.Device(device):
            source = resources.files("gpuproof.kernels.cuda").joinpath("memory.cu").read_text()
            self.module = cupy.RawModule(code=source, options=("-std=c++17",))
            self._pad = self.module.get_function("table_pad")
            self._walk = self.module.get_function("walk")

    def table_pad(self, c_round: Any, pk_words: Any, round_index: int, n_leaves: int) -> None:
        """XOR the pads of leaves 0..n_leaves-1 of round `round_index` into `c_round` (uint32), in place."""
        if n_leaves:
            self._pad((pad_grid(n_leaves),), (PAD_THREADS,),
                      (c_round, pk_words, np.uint32(round_index), np.uint64(n_leaves)))

    def walk(self, table: Any, n_leaves: int, wk_words: Any, first_lane: int, n_lanes: int, steps: int,
             states: Any, leaf_hashes: Any) -> None:
        """Walk lanes first_lane .. first_lane+n_lanes-1: final states (4 uint32 each) and leaf hashes."""
        if n_lanes:
            self._walk((walk_grid(n_lanes),), (WALK_THREADS,),
                       (table, np.uint64(n_leaves), wk_words, np.uint64(first_lane), np.uint64(n_lanes),
                        np.int32(steps), states, leaf_hashes))


class CudaMemoryProver:
    """The prover's side of the memory phase on a GPU (the NumPy twin: kernels.memory.MemoryProver): the
    table resident on the device, the walk and its tree there, lane openings cut on the host.

    The table rounds' C are recomputed from the committed roots (`CudaBackend.round_device`), each copied
    into the table and padded in place (`table_pad`); the walk (`walk`) writes the lanes' final states and
    their leaf hashes, and gpuproof.cu's `merkle_levels` (`CudaKernels.build_levels`) builds the walk tree
    above them. An opening re-walks its lane on the host from table rows copied back, XORs off the pads
    (hashlib) for the raw C leaves, and cuts each leaf's path from its round's tree (recomputed on the
    device, once per round visited). `kernels` (default: memory.cu compiled for the backend's device) may
    be the host emulation's (tests/support/memory_emu.py).
    """

    def __init__(self, backend: Any, plan: memory.MemoryPlan, roots: Sequence[bytes] | None = None,
                 kernels: Any = None) -> None:
        """With `roots`, the table rounds are recomputed from them now; without, `run` fills the table."""
        import cupy

        self.cupy, self.backend, self.plan, self.roots = cupy, backend, plan, list(roots or ())
        self.kernels = kernels if kernels is not None else MemoryKernels(backend.device)
        params = plan.params
        self.pk = memory.pad_key(params.seed)
        with cupy.cuda.Device(backend.device):
            self.table = cupy.empty((plan.table_leaves, memory.WORDS_PER_LEAF), dtype=np.uint32)
            self._pk_words = cupy.asarray(key_words(self.pk))
            if roots is not None:
                for r in range(plan.first_round, params.rounds):
                    self._keep(r, backend.round_device(params, r, self.roots))
                cupy.cuda.get_current_stream().synchronize()
        self.sizes, self.offsets = merkle.level_layout(plan.lanes)
        self.levels: Any = None
        self.states: Any = None
        self._trees: dict[int, merkle.MerkleTree] = {}
        self._walk_tree: merkle.MerkleTree | None = None

    def _keep(self, round_index: int, c: Any) -> None:
        """Copy round `round_index`'s C (on the device) into its place in the table and pad it there."""
        per = self.plan.params.leaves_per_round
        t = round_index - self.plan.first_round
        part = self.table[t * per:(t + 1) * per]
        part[...] = c.view(np.uint32).reshape(per, -1)
        self.kernels.table_pad(part, self._pk_words, round_index, per)

    @classmethod
    def run(cls, backend: Any, plan: memory.MemoryPlan, kernels: Any = None) -> tuple[list[bytes], CudaMemoryProver]:
        """Compute the challenge's R roots and fill the table as the rounds come (each table round's C copied
        and padded right after its round, on the same stream): no round is computed twice."""
        prover = cls(backend, plan, None, kernels)
        params = plan.params
        cupy = prover.cupy
        with cupy.cuda.Device(backend.device):
            bufs = backend._buffers_for(params)
            for r in range(params.rounds):
                backend._round(bufs, r)
                if r >= plan.first_round:
                    prover._keep(r, bufs.c[:params.m])
            host = bufs.roots[1:params.rounds + 1].get()
        prover.roots = [bytes(row) for row in host]
        return prover.roots, prover

    def run_walk(self, wk: bytes) -> bytes:
        """Walk every lane on the device and build the walk tree there; returns the walk root."""
        cupy, plan = self.cupy, self.plan
        with cupy.cuda.Device(self.backend.device):
            self.states = cupy.empty((plan.lanes, 4), dtype=np.uint32)
            self.levels = cupy.empty(sum(self.sizes) * 32, dtype=np.uint8)
            root = cupy.empty(32, dtype=np.uint8)
            self.kernels.walk(self.table, plan.table_leaves, cupy.asarray(key_words(wk)), 0, plan.lanes, plan.steps,
                              self.states, self.levels[:plan.lanes * 32].view(np.uint32))
            self.backend.kernels.build_levels(self.levels, plan.lanes, root_out=root)
            out = bytes(root.get())
        self._walk_tree = None
        return out

    def _round_tree(self, round_index: int) -> merkle.MerkleTree:
        if round_index not in self._trees:
            self._trees[round_index] = self.backend.round_tree(self.plan.params, round_index, self.roots)
        return self._trees[round_index]

    def open(self, lane: int, wk: bytes) -> memory.LaneOpening:
        """Lane `lane` re-walked on the host from the device's table rows, with the raw leaves it read and
        their paths, its final state and its path in the walk tree."""
        assert self.levels is not None and self.states is not None, "run_walk first"
        cupy, plan = self.cupy, self.plan
        if self._walk_tree is None:
            with cupy.cuda.Device(self.backend.device):
                self._walk_tree = merkle.tree_from_levels(
                    [self.levels[off * 32:(off + size) * 32].get().tobytes()
                     for off, size in zip(self.offsets, self.sizes, strict=True)])
        state = memory.lane_seeds(wk, np.array([lane], dtype=np.uint64))
        leaves, paths = [], []
        for _ in range(plan.steps):
            address = int(memory.addresses(state, plan.table_leaves)[0])
            r, leaf = plan.locate(address)
            with cupy.cuda.Device(self.backend.device):
                padded = np.asarray(self.table[address].get(), dtype=np.uint32)
            raw = (padded ^ memory.leaf_pad(self.pk, r, leaf)).astype("<u4").tobytes()
            assert len(raw) == CHUNK_BYTES
            leaves.append(raw)
            paths.append(tuple(self._round_tree(r).inclusion_proof(leaf)))
            state = memory.step(state, padded[None, :])
        with cupy.cuda.Device(self.backend.device):
            final = memory.state_bytes(np.asarray(self.states[lane].get(), dtype=np.uint32))
        if memory.state_bytes(state[0]) != final:
            raise RuntimeError(f"lane {lane}: the host re-walk ends in another state than the device's walk")
        return memory.LaneOpening(lane=lane, state=final, path=tuple(self._walk_tree.inclusion_proof(lane)),
                                  leaves=tuple(leaves), leaf_paths=tuple(paths))
