"""The spec v2 memory phase on a GPU: identity of kernels/cuda/memory.cu with the NumPy reference, then
timings (bench/device_check.py runs both; NumPy + CuPy only).

Identity first: pads XORed into random C leaves, walks over a random table (lane states and walk-tree
leaves), at small sizes. Then, with CUDA events: a plain device-to-device copy (the rate to compare the
walk with), the table fill (pads of one 256 MiB round), and the walk over a 16 GiB table at several lane
counts (GB/s of leaves read, and as a fraction of the copy's read rate).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

import cupy
import numpy as np
from gpuproof.kernels import cuda_memory, memory, merkle
from gpuproof.kernels.cuda_identity import Check, _compare
from gpuproof.kernels.memory import MemoryPlan
from gpuproof.kernels.spec import ChallengeParams


def _seconds(fn: Callable[[], None], repeats: int = 5, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, end) / 1e3)
    return statistics.median(times)


def identity(rng: np.random.Generator) -> list[Check]:
    kern = cuda_memory.MemoryKernels(cupy.cuda.Device().id)
    checks = []
    for leaves, round_index in [(1, 0), (37, 5), (1000, 2**32 - 1)]:
        c = rng.integers(0, 2**32, size=(leaves, 256), dtype=np.uint32)
        pk = memory.pad_key(rng.bytes(32))
        dev = cupy.asarray(c)
        kern.table_pad(dev, cupy.asarray(cuda_memory.key_words(pk)), round_index, leaves)
        want = np.stack([c[i] ^ memory.leaf_pad(pk, round_index, i) for i in range(leaves)])
        checks.append(_compare(f"memory table_pad, {leaves} leaves, round {round_index}", dev.get(), want))
    for lanes, first, steps, n_leaves in [(1, 0, 1, 1), (13, 2**32 + 3, 9, 64), (2000, 7, 33, 4099)]:
        table = rng.integers(0, 2**32, size=(n_leaves, 256), dtype=np.uint32)
        wk = rng.bytes(32)
        plan = MemoryPlan(ChallengeParams(bytes(32), n_leaves, 256, 64, 1), 1, first + lanes, steps, 1)
        states = cupy.zeros((lanes, 4), dtype=cupy.uint32)
        hashes = cupy.zeros((lanes, 8), dtype=cupy.uint32)
        kern.walk(cupy.asarray(table), n_leaves, cupy.asarray(cuda_memory.key_words(wk)), first, lanes, steps,
                  states, hashes)
        want = memory.walk(plan, table, wk, np.arange(first, first + lanes, dtype=np.uint64))
        checks.append(_compare(f"memory walk, {lanes} lanes x {steps} steps over {n_leaves} leaves",
                               states.get(), want))
        want_leaves = np.frombuffer(merkle.hash_chunks(memory.state_bytes(want), memory.STATE_BYTES), np.uint32)
        checks.append(_compare(f"memory walk-tree leaves, {lanes} lanes", hashes.get().ravel(), want_leaves))
    return checks


def _copy_seconds(copy_bytes: int) -> tuple[float, int]:
    """A plain device-to-device copy of `copy_bytes` (the buffers are freed on return)."""
    src, dst = cupy.empty(copy_bytes, dtype=cupy.uint8), cupy.empty(copy_bytes, dtype=cupy.uint8)

    def copy() -> None:
        dst[...] = src

    return _seconds(copy), copy_bytes


def _fill_seconds(kern: cuda_memory.MemoryKernels, rng: np.random.Generator, leaves: int) -> float:
    """table_pad over `leaves` leaves of random C (by default one Hopper-sized round: 262144, 256 MiB)."""
    c_round = cupy.asarray(rng.integers(0, 2**32, size=leaves * 256, dtype=np.uint32))
    pk = cupy.asarray(cuda_memory.key_words(rng.bytes(32)))

    def fill() -> None:
        kern.table_pad(c_round, pk, 1, leaves)

    return _seconds(fill)


def timings(rng: np.random.Generator, table_gib: float = 16.0, copy_gib: float = 4.0,
            lane_counts: tuple[int, ...] = (2**16, 2**18, 2**20, 2**22), steps: int = 64,
            fill_leaves: int = 8192 * 8192 // 256) -> dict[str, Any]:
    kern = cuda_memory.MemoryKernels(cupy.cuda.Device().id)
    out: dict[str, Any] = {}
    t_copy, copy_bytes = _copy_seconds(int(copy_gib * 2**30))
    out["copy_gbps"] = copy_bytes / t_copy / 1e9  # bytes copied per second (each read once and written once)
    out["copy_rw_gbps"] = 2 * copy_bytes / t_copy / 1e9
    out["fill_gbps"] = fill_leaves * 1024 / _fill_seconds(kern, rng, fill_leaves) / 1e9
    n_leaves = int(table_gib * 2**30) // 1024
    table = cupy.empty((n_leaves, 256), dtype=cupy.uint32)
    table[...] = 0x5A5A5A5A  # what it holds does not change the walk's speed
    wk = cupy.asarray(cuda_memory.key_words(rng.bytes(32)))
    walks = {}
    for lanes in lane_counts:
        states = cupy.zeros((lanes, 4), dtype=cupy.uint32)
        hashes = cupy.zeros((lanes, 8), dtype=cupy.uint32)

        def run(lanes: int = lanes, states: Any = states, hashes: Any = hashes) -> None:
            kern.walk(table, n_leaves, wk, 0, lanes, steps, states, hashes)

        t = _seconds(run)
        walks[str(lanes)] = lanes * steps * 1024 / t / 1e9
    out["walk_gbps"] = walks
    out["best_walk_gbps"] = max(walks.values())
    out["walk_vs_copy_read"] = out["best_walk_gbps"] / out["copy_gbps"]
    out["table_gib"], out["steps"] = table_gib, steps
    return out
