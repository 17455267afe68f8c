#!/usr/bin/env python3
"""Time the compile-time kernel variants of kernels/cuda/gpuproof.cu on one GPU (NumPy + CuPy only).

    python3 bench/kernel_variants.py [--size 8192] [--variants default t1-fma ...]

For each define set: a quick identity check (leaf hashes against hashlib, levels against the Python
tree, nibbles against the reference), then leaf hashing GB/s over 256 MiB, the tree over 2**18 leaves
(9 and 6 levels per launch), generation GB/s, and a full round at m = n = k = 8192, all with CUDA events
(median of repeats). The defaults in the source are chosen from this table (docs/performance.md).
Writes kernel_variants.json to $OUT when that is set.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import cupy  # noqa: E402
import numpy as np  # noqa: E402
from device_check import gpu_seconds  # noqa: E402
from gpuproof.kernels import merkle, reference, spec  # noqa: E402
from gpuproof.kernels.cuda_backend import ChallengeBuffers, CudaBackend, CudaKernels  # noqa: E402
from gpuproof.kernels.spec import ChallengeParams  # noqa: E402

VARIANTS = {
    "default": (),
    "leaf-alu": ("GP_LEAF_FMA=0",),
    "t1-fma": ("GP_T1_FMA=1",),  # not yet timed on a GPU: bench/sass_mix.py models it 6% faster
    "node-fma": ("GP_NODE_FMA=1",),
    "gen-direct": ("GP_GEN_SMEM=0",),
    "leaf-7-blocks": ("GP_LEAF_MIN_BLOCKS=7",),
    "leaf-8-blocks": ("GP_LEAF_MIN_BLOCKS=8",),
}


def identical(kern: CudaKernels, rng: np.random.Generator) -> bool:
    data = rng.bytes(1024 * 1000)
    out = cupy.zeros(32 * 1000, dtype=cupy.uint8)
    kern.leaf_hashes(cupy.asarray(np.frombuffer(data, np.uint8)), 1000, out)
    ok = out.get().tobytes() == merkle.hash_chunks(data, 1024)
    hashes = rng.bytes(32 * 777)
    sizes, _ = merkle.level_layout(777)
    buf = cupy.zeros(sum(sizes) * 32, dtype=cupy.uint8)
    buf[: 32 * 777] = cupy.asarray(np.frombuffer(hashes, np.uint8))
    kern.build_levels(buf, 777)
    tree = merkle.MerkleTree(hashes)
    ok &= buf.get().tobytes() == b"".join(tree.level(h) for h in range(len(sizes)))
    key16 = rng.bytes(16)
    vals = cupy.empty((33, 640), dtype=cupy.int8)
    kern.gen(vals, cupy.asarray(np.array(spec.key_words(key16), dtype=np.uint64)), 7 * 640 // 64)
    ok &= bool(np.array_equal(vals.get(), reference.nibble_matrix(key16, 33, 640, row_offset=7)))
    return bool(ok)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="time the compile-time kernel variants on one GPU")
    ap.add_argument("--size", type=int, default=8192, help="m = n = k (default 8192)")
    ap.add_argument("--variants", nargs="*", choices=sorted(VARIANTS), default=list(VARIANTS))
    args = ap.parse_args(argv)
    dev = cupy.cuda.Device().id
    props = cupy.cuda.runtime.getDeviceProperties(dev)
    card = props["name"].decode()
    rng = np.random.default_rng(int.from_bytes(os.urandom(8), "little"))
    m = n = k = args.size
    params = ChallengeParams(rng.bytes(32), m, n, k, 1)
    bufs = ChallengeBuffers(params)
    n_chunks = m * n // 256
    big = cupy.empty((m, 4 * k), dtype=cupy.int8)
    rows = []
    for name in args.variants:
        defines = VARIANTS[name]
        t0 = time.perf_counter()
        kern = CudaKernels(dev, defines)
        ok = identical(kern, rng)
        kern.gen(bufs.b, bufs.key_b)

        def fresh():
            bufs.key_a.set(np.frombuffer(rng.bytes(16), dtype=np.uint64))

        def fresh_c(kern=kern):
            fresh()
            kern.gen(bufs.a, bufs.key_a)
            kern.gemm(bufs.a, bufs.b, bufs.c)

        level0 = bufs.levels[: n_chunks * 32]
        leaf = gpu_seconds(lambda: kern.leaf_hashes(bufs.c, n_chunks, level0), before=fresh_c)  # noqa: B023
        tree9 = gpu_seconds(lambda: kern.build_levels(bufs.levels, n_chunks, 9), repeats=9)  # noqa: B023
        tree6 = gpu_seconds(lambda: kern.build_levels(bufs.levels, n_chunks, 6), repeats=9)  # noqa: B023
        gen64 = gpu_seconds(lambda: kern.gen(bufs.a, bufs.key_a), before=fresh)  # noqa: B023
        gen4 = gpu_seconds(lambda: kern.gen(big, bufs.key_a), before=fresh)  # noqa: B023
        gemm = gpu_seconds(lambda: kern.gemm(bufs.a, bufs.b, bufs.c), before=fresh)  # noqa: B023
        backend = CudaBackend(dev)
        backend.kernels = kern
        backend._buffers = bufs
        def fresh_prev():
            bufs.roots[0].set(np.frombuffer(rng.bytes(32), np.uint8))

        rnd = gpu_seconds(lambda: backend._round(bufs, 0), before=fresh_prev)  # noqa: B023
        row = {"variant": name, "defines": list(defines), "identical": ok,
               "leaf_gbps": m * n * 4 / leaf / 1e9, "tree9_ms": tree9 * 1e3, "tree6_ms": tree6 * 1e3,
               "gen64_gbps": m * k / gen64 / 1e9, "gen256_gbps": 4 * m * k / gen4 / 1e9,
               "gemm_tops": 2 * m * n * k / gemm / 1e12, "round_ms": rnd * 1e3, "round_fraction": gemm / rnd}
        rows.append(row)
        print(json.dumps(row), f"({time.perf_counter() - t0:.1f} s)", flush=True)
    out = os.environ.get("OUT")
    if out:
        Path(out, "kernel_variants.json").write_text(json.dumps({"card": card, "rows": rows}, indent=1))
    print(f"\n{card}: m=n=k={m}")
    print("variant | identical | leaf GB/s | tree ms (9/launch) | tree ms (6/launch) | "
          "gen GB/s A / 4A (64/256 MiB at 8192) | gemm TOPS | round ms | round/gemm")
    for r in rows:
        print(f"{r['variant']} | {r['identical']} | {r['leaf_gbps']:.0f} | {r['tree9_ms']:.3f} | "
              f"{r['tree6_ms']:.3f} | {r['gen64_gbps']:.0f}/{r['gen256_gbps']:.0f} | {r['gemm_tops']:.0f} | "
              f"{r['round_ms']:.3f} | {r['round_fraction']:.1%}")
    return 0 if all(r["identical"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
