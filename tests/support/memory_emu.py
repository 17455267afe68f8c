"""The memory-phase kernels of kernels/cuda/memory.cu compiled for the host and run on the CPU (no GPU).

The same shim as tests/support/cuda_emu.py (one fiber per CUDA thread, barriers for __syncwarp), built
from memory.cu alone with cuda_emu/memory_launch.cpp. `MemoryEmuKernels` launches with the grids
kernels/cuda_memory.py uses, over NumPy buffers. Timing, the memory model and register limits are for a
GPU to show (bench/device_check.py).
"""

from __future__ import annotations

import ctypes
import hashlib
import random
import subprocess
import tempfile
from importlib import resources
from pathlib import Path

import numpy as np
from gpuproof.kernels import cuda_memory

from tests.support.cuda_emu import HERE, compiler_reason

__all__ = ["MemoryEmuKernels", "compiler_reason"]
_lib: ctypes.CDLL | None = None


def library() -> ctypes.CDLL:
    """memory.cu compiled for the host, built once per source version, cached in the temp dir."""
    global _lib
    if _lib is not None:
        return _lib
    source = Path(str(resources.files("gpuproof.kernels.cuda").joinpath("memory.cu")))
    launch = HERE / "memory_launch.cpp"
    digest = hashlib.sha256(source.read_bytes() + (HERE / "shim.h").read_bytes()
                            + launch.read_bytes()).hexdigest()[:16]
    out = Path(tempfile.gettempdir()) / f"gpuproof-memory-emu-{digest}.so"
    if not out.exists():
        tmp = out.with_suffix(f".{random.getrandbits(32):08x}.tmp")
        cmd = ["g++", "-std=c++20", "-O2", "-shared", "-fPIC", "-Wall", "-Werror", "-Wno-unknown-pragmas",
               f'-DGP_SOURCE="{source}"', "-I", str(HERE), "-x", "c++", str(launch), "-o", str(tmp)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"the memory-kernel emulation does not compile:\n{done.stderr}")
        tmp.replace(out)
    lib = ctypes.CDLL(str(out))
    u32, u64, i32, ptr = ctypes.c_uint32, ctypes.c_uint64, ctypes.c_int32, ctypes.c_void_p
    lib.emu_table_pad.argtypes = [u32, u32, ptr, ptr, u32, u64]
    lib.emu_walk.argtypes = [u32, u32, ptr, u64, ptr, u64, u64, i32, ptr, ptr]
    _lib = lib
    return lib


def _ptr(array: np.ndarray) -> int:
    assert array.flags.c_contiguous
    return array.ctypes.data


class MemoryEmuKernels:
    """The launchers of kernels/cuda_memory.MemoryKernels, over NumPy buffers, on the CPU."""

    def __init__(self) -> None:
        self.lib = library()

    def table_pad(self, c_round: np.ndarray, pk_words: np.ndarray, round_index: int, n_leaves: int) -> None:
        if n_leaves:
            self.lib.emu_table_pad(cuda_memory.pad_grid(n_leaves), cuda_memory.PAD_THREADS, _ptr(c_round),
                                   _ptr(pk_words), round_index, n_leaves)

    def walk(self, table: np.ndarray, n_leaves: int, wk_words: np.ndarray, first_lane: int, n_lanes: int,
             steps: int, states: np.ndarray, leaf_hashes: np.ndarray) -> None:
        if n_lanes:
            self.lib.emu_walk(cuda_memory.walk_grid(n_lanes), cuda_memory.WALK_THREADS, _ptr(table), n_leaves,
                              _ptr(wk_words), first_lane, n_lanes, steps, _ptr(states), _ptr(leaf_hashes))
