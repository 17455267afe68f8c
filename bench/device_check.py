#!/usr/bin/env python3
"""GPU device check: bit-identity of every CUDA kernel against the NumPy reference, then timings.

One script, no arguments, NumPy + CuPy only. Run on a GPU machine from the repository root:

    python3 bench/device_check.py

It runs the identity checks first (kernels/cuda_identity.py), then times with CUDA events (warm-up,
median of repeats, fresh random data) at m = n = 8192 with k = 8192 and k = 32768: raw cuBLAS gemmEx
int8 TOPS, nibble generation GB/s, leaf hashing GB/s, tree build, a full round, and the full round as a
fraction of raw gemmEx, for the sequential launch plan and the pipelined one (2 to 16 row pieces); then
spec v2 (full-range int8): byte generation GB/s, gemmEx on full-range data (more bits toggle than with
nibbles: a card near its power limit may clock lower) and a full sequential v2 round; and the spec v2 memory
phase (bench/memory_device.py): its kernels' identity, walk GB/s against a plain device-to-device copy, and
the table fill.
It prints a table last and writes device_check.json to $OUT when that is set.
Exit status: 0 when every identity check passed, 1 otherwise.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import statistics
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cupy  # noqa: E402
import numpy as np  # noqa: E402
from gpuproof.kernels import spec  # noqa: E402
from gpuproof.kernels.cuda_backend import ChallengeBuffers, CudaBackend  # noqa: E402
from gpuproof.kernels.cuda_identity import ALL_CHECKS, Check  # noqa: E402
from gpuproof.kernels.spec import SPEC_V2, ChallengeParams  # noqa: E402

WARMUP = 3
REPEATS = 15
PIECES = (2, 4, 8, 16)  # pipelined plans timed beside the sequential one


def gpu_seconds(fn, repeats: int = REPEATS, warmup: int = WARMUP, before=None) -> float:
    """Median seconds of fn() between two CUDA events; `before` (untimed) runs ahead of each repeat."""
    for _ in range(warmup):
        if before:
            before()
        fn()
    times = []
    for _ in range(repeats):
        if before:
            before()
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, end) / 1e3)
    return statistics.median(times)


def identity(rng: np.random.Generator) -> list[Check]:
    vectors = [v for name in ("spec_v1.json", "spec_v2.json")  # v2's vectors name their spec, v1's none
               for v in json.loads((ROOT / "tests" / "vectors" / name).read_text())["challenges"]]
    results: list[Check] = []
    for name, fn in ALL_CHECKS.items():
        t0 = time.perf_counter()
        try:
            got = list(fn(rng, vectors=vectors) if name == "challenges" else fn(rng))
        except Exception as exc:  # report and go on: the timings are still worth having
            traceback.print_exc()
            got = [Check(f"{name} (raised)", False, f"{type(exc).__name__}: {exc}")]
        for c in got:
            print(f"  [{'ok' if c.ok else 'FAIL'}] {c.name}" + ("" if c.ok else f": {c.detail}"), flush=True)
        print(f"  {name}: {time.perf_counter() - t0:.1f} s", flush=True)
        results += got
    return results


def timings(m: int, n: int, k: int, rng: np.random.Generator) -> dict[str, Any]:
    backend = CudaBackend(cupy.cuda.Device().id)
    kern = backend.kernels
    params = ChallengeParams(rng.bytes(32), m, n, k, 1)
    bufs = ChallengeBuffers(params)
    kern.gen(bufs.b, bufs.key_b)
    backend._buffers = bufs
    ops = 2.0 * m * n * k

    def fresh_keys():  # fresh random data for every repeat
        bufs.key_a.set(np.frombuffer(rng.bytes(16), dtype=np.uint64))

    def regen_a():
        fresh_keys()
        kern.gen(bufs.a, bufs.key_a)

    t_gemm = gpu_seconds(lambda: kern.gemm(bufs.a, bufs.b, bufs.c), before=regen_a)
    t_gen = gpu_seconds(lambda: kern.gen(bufs.a, bufs.key_a), before=fresh_keys)
    n_chunks = m * n // 256
    level0 = bufs.levels[: n_chunks * 32]

    def regen_c():
        regen_a()
        kern.gemm(bufs.a, bufs.b, bufs.c)

    t_leaf = gpu_seconds(lambda: kern.leaf_hashes(bufs.c, n_chunks, level0), before=regen_c)
    t_tree = gpu_seconds(lambda: kern.build_levels(bufs.levels, n_chunks),
                         before=lambda: kern.leaf_hashes(bufs.c, n_chunks, level0))

    def fresh_prev():
        bufs.roots[0].set(np.frombuffer(rng.bytes(32), np.uint8))

    t_round = gpu_seconds(lambda: backend._round(bufs, 0), before=fresh_prev)
    # The pipelined launch plan (kernels/cuda_plan.py): the same round in row pieces over two streams.
    pipelined = {}
    for pieces in PIECES:
        piped = CudaBackend(cupy.cuda.Device().id, pieces=pieces)
        piped._buffers = bufs
        pipelined[pieces] = gpu_seconds(lambda p=piped: p._round(bufs, 0), before=fresh_prev)
    best = min(pipelined, key=pipelined.__getitem__) if pipelined else 1
    # the best pipelined plan with 9 tree levels per launch (fewer launches on the path to the root)
    nine = CudaBackend(cupy.cuda.Device().id, pieces=best, per_launch=9)
    nine._buffers = bufs
    t_nine = gpu_seconds(lambda: nine._round(bufs, 0), before=fresh_prev)
    # Several chained rounds through the public API, timed on the host clock (includes the copy back),
    # with the sequential plan and with the best pipelined one.
    rounds = 8
    run_params = ChallengeParams(rng.bytes(32), m, n, k, rounds)
    run_s = {}
    for pieces in sorted({1, best}):
        runner = backend if pieces == 1 else CudaBackend(cupy.cuda.Device().id, pieces=pieces)
        runner.run(run_params)  # allocate and warm
        cupy.cuda.get_current_stream().synchronize()
        t0 = time.perf_counter()
        runner.run(run_params)
        run_s[pieces] = (time.perf_counter() - t0) / rounds
        runner._buffers = None  # one challenge's buffers on the device at a time
    backend._buffers = bufs
    # Spec v2 on the same buffers: B regenerated as full-range int8, then byte generation, the GEMM on
    # full-range data and a whole sequential round.
    bufs.load_seed(replace(params, spec=SPEC_V2), kern)

    def regen_a_v2():
        fresh_keys()
        kern.gen(bufs.a, bufs.key_a, 0, SPEC_V2)

    t_gen_v2 = gpu_seconds(lambda: kern.gen(bufs.a, bufs.key_a, 0, SPEC_V2), before=fresh_keys)
    t_gemm_v2 = gpu_seconds(lambda: kern.gemm(bufs.a, bufs.b, bufs.c), before=regen_a_v2)
    t_round_v2 = gpu_seconds(lambda: backend._round(bufs, 0), before=fresh_prev)
    return {
        "m": m, "n": n, "k": k,
        "gemm_s": t_gemm, "gemm_tops": ops / t_gemm / 1e12,
        "gen_s": t_gen, "gen_gbps": m * k / t_gen / 1e9,
        "leaf_s": t_leaf, "leaf_gbps": m * n * 4 / t_leaf / 1e9,
        "tree_s": t_tree,
        "round_s": t_round, "round_tops": ops / t_round / 1e12, "round_fraction": t_gemm / t_round,
        "pipelined_round_s": {str(p): t for p, t in pipelined.items()},
        "pipelined_fraction": {str(p): t_gemm / t for p, t in pipelined.items()},
        "best_pieces": best, "best_pieces_9_levels_s": t_nine, "best_pieces_9_levels_fraction": t_gemm / t_nine,
        "run_round_s": run_s[1], "run_fraction": t_gemm / run_s[1],
        "run_best_round_s": run_s[best], "run_best_fraction": t_gemm / run_s[best],
        "v2_gen_s": t_gen_v2, "v2_gen_gbps": m * k / t_gen_v2 / 1e9,
        "v2_gemm_s": t_gemm_v2, "v2_gemm_tops": ops / t_gemm_v2 / 1e12,
        "v2_round_s": t_round_v2, "v2_round_tops": ops / t_round_v2 / 1e12,
        "v2_round_fraction": t_gemm_v2 / t_round_v2,
    }


def main() -> int:
    started = time.perf_counter()
    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    card = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    info = {
        "card": card, "date": dt.date.today().isoformat(), "cupy": cupy.__version__, "numpy": np.__version__,
        "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion(), "driver": cupy.cuda.runtime.driverGetVersion(),
        "sms": props["multiProcessorCount"], "spec": spec.SPEC, "specs": list(spec.SPECS),
    }
    print(f"device check on {card}: {json.dumps(info)}", flush=True)
    rng = np.random.default_rng(int.from_bytes(os.urandom(8), "little"))
    print("identity checks:", flush=True)
    checks = identity(rng)
    failed = [c for c in checks if not c.ok]
    print(f"identity: {len(checks) - len(failed)} passed, {len(failed)} failed "
          f"({time.perf_counter() - started:.1f} s)", flush=True)

    checkpoint: dict[str, Any] = {}
    try:
        from gpuproof.verifier import checkpoints

        state = {f"layer{i}": cupy.random.standard_normal(2**26, dtype=cupy.float32) for i in range(4)}  # 1 GiB
        checkpoints.root_on_gpu(state)  # warm
        cupy.cuda.get_current_stream().synchronize()
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            checkpoints.root_on_gpu(state)
            times.append(time.perf_counter() - t0)
        checkpoint = {"bytes": 2**30, "seconds": statistics.median(times),
                      "gbps": 2**30 / statistics.median(times) / 1e9}
        print(f"checkpoint commit, 1 GiB on the GPU: {checkpoint['gbps']:.0f} GB/s", flush=True)
        del state
    except Exception as exc:
        traceback.print_exc()
        checkpoint = {"error": f"{type(exc).__name__}: {exc}"}

    # spec v2 memory phase (bench/memory_device.py): identity first, then walk, copy and table fill
    memory_phase: dict[str, Any] = {}
    try:
        import memory_device

        mem_checks = memory_device.identity(rng)
        for c in mem_checks:
            print(f"  [{'ok' if c.ok else 'FAIL'}] {c.name}" + ("" if c.ok else f": {c.detail}"), flush=True)
        checks += mem_checks
        failed = [c for c in checks if not c.ok]
        memory_phase = memory_device.timings(rng)
        print(f"v2 memory: {json.dumps(memory_phase)}", flush=True)
    except Exception as exc:
        traceback.print_exc()
        memory_phase = {"error": f"{type(exc).__name__}: {exc}"}

    rows: list[dict[str, Any]] = []
    for m, n, k in [(8192, 8192, 8192), (8192, 8192, 32768)]:
        try:
            rows.append(timings(m, n, k, rng))
        except Exception as exc:
            traceback.print_exc()
            rows.append({"m": m, "n": n, "k": k, "error": f"{type(exc).__name__}: {exc}"})
        print(f"timed m=n={m} k={k} ({time.perf_counter() - started:.1f} s)", flush=True)

    result = {"info": info, "identity": [c.__dict__ for c in checks], "timings": rows, "checkpoint": checkpoint,
              "memory_phase": memory_phase, "seconds": time.perf_counter() - started}
    out = os.environ.get("OUT")
    if out:
        Path(out, "device_check.json").write_text(json.dumps(result, indent=1))

    print(f"\n{card}, {info['date']}, CuPy {info['cupy']}; identity {len(checks) - len(failed)}/{len(checks)}")
    header = ("m=n", "k", "gemmEx TOPS", "gen GB/s", "leaf GB/s", "tree ms", "round ms", "round TOPS",
              "round/gemm", "run() ms/round", "run/gemm")
    print(" | ".join(header))
    for r in rows:
        if "error" in r:
            print(f"{r['m']} | {r['k']} | error: {r['error']}")
            continue
        print(" | ".join([str(r["m"]), str(r["k"]), f"{r['gemm_tops']:.0f}", f"{r['gen_gbps']:.0f}",
                          f"{r['leaf_gbps']:.0f}", f"{r['tree_s'] * 1e3:.3f}", f"{r['round_s'] * 1e3:.3f}",
                          f"{r['round_tops']:.0f}", f"{r['round_fraction']:.1%}",
                          f"{r['run_round_s'] * 1e3:.3f}", f"{r['run_fraction']:.1%}"]))
    print("\npipelined plan (round in row pieces, hashing on a second stream): round ms and round/gemm by pieces")
    print("m=n | k | " + " | ".join(f"{p} pieces" for p in PIECES)
          + " | best, 9 levels/launch | best: run() ms/round, run/gemm")
    for r in rows:
        if "error" in r:
            continue
        cells = [f"{r['pipelined_round_s'][str(p)] * 1e3:.3f} ({r['pipelined_fraction'][str(p)]:.1%})"
                 for p in PIECES]
        print(" | ".join([str(r["m"]), str(r["k"]), *cells,
                          f"{r['best_pieces_9_levels_s'] * 1e3:.3f} ({r['best_pieces_9_levels_fraction']:.1%})",
                          f"{r['best_pieces']}: {r['run_best_round_s'] * 1e3:.3f}, {r['run_best_fraction']:.1%}"]))
    print("\nspec v2 (full-range int8), sequential plan")
    print("m=n | k | gen GB/s | gemmEx TOPS (v2 data) | round ms | round TOPS | round/gemm")
    for r in rows:
        if "error" in r:
            continue
        print(" | ".join([str(r["m"]), str(r["k"]), f"{r['v2_gen_gbps']:.0f}", f"{r['v2_gemm_tops']:.0f}",
                          f"{r['v2_round_s'] * 1e3:.3f}", f"{r['v2_round_tops']:.0f}",
                          f"{r['v2_round_fraction']:.1%}"]))
    if "gbps" in checkpoint:
        print(f"checkpoint commit (1 GiB, 4 float32 tensors, host-timed, median of 5): {checkpoint['gbps']:.0f} GB/s")
    if "best_walk_gbps" in memory_phase:
        print(f"v2 memory walk: {memory_phase['best_walk_gbps']:.0f} GB/s of leaves read (by lanes: "
              f"{', '.join(f'{k}: {v:.0f}' for k, v in memory_phase['walk_gbps'].items())}); device-to-device copy "
              f"{memory_phase['copy_gbps']:.0f} GB/s copied ({memory_phase['copy_rw_gbps']:.0f} read+write); walk/copy "
              f"{memory_phase['walk_vs_copy_read']:.0%}; table fill {memory_phase['fill_gbps']:.0f} GB/s")
    print(f"total {time.perf_counter() - started:.1f} s")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
