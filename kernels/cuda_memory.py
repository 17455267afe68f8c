"""The memory phase on a GPU (kernels/cuda/memory.cu through CuPy): table pads and the walk.

Import cupy only inside `MemoryKernels`; the grid arithmetic here is shared with the host emulation
(tests/support/memory_emu.py) so both launch the same way. The NumPy twin is kernels/memory.py.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import numpy as np

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
