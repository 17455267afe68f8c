#!/usr/bin/env python3
"""CPU benchmarks of the challenge engine (issue targets, this 2-core machine), printed as a table.

    python bench/cpu_bench.py [--repeats N]

Each figure is the median of N runs, next to a baseline measured in the same process, so the ratio is
what carries from machine to machine:
- reference round at m = n = k = 1024 (target <= 0.25 s); baseline: the exact float BLAS product alone;
- Merkle root over 2**18 leaves of 1 KiB (target <= 0.6 s); baseline: one hashlib SHA-256 pass over the
  same 256 MiB (the floor any SHA-256 tree over it has);
- one opening verification at n = k = 8192 with the exact row check (target <= 0.1 s), B made once per
  challenge beforehand; baseline: regenerating that one row of A alone.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from gpuproof.kernels import merkle, reference  # noqa: E402
from gpuproof.kernels.backend import Opening  # noqa: E402
from gpuproof.kernels.spec import ChallengeParams, a_key  # noqa: E402
from gpuproof.verifier.openings import ChallengeReference, verify_opening  # noqa: E402


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rows = []

    # 1. one reference round at m = n = k = 1024
    params = ChallengeParams(bytes(range(32)), 1024, 1024, 1024, 1)
    backend = reference.CpuBackend()
    backend.run(params)  # warm: B made and converted once per challenge
    b_float = backend._b_float(params)
    a = reference.a_matrix(params, 0, bytes(32))
    t_round = median_seconds(lambda: backend.run(params), args.repeats)
    t_matmul = median_seconds(lambda: reference.matmul_exact(a, b_float), args.repeats)
    rows.append(("reference round m=n=k=1024", t_round, 0.25, "float BLAS product alone", t_matmul))

    # 2. Merkle root over 2**18 leaves of 1 KiB
    data = np.random.default_rng(1).integers(0, 256, size=2**28, dtype=np.uint8).tobytes()
    t_tree = median_seconds(lambda: merkle.root_of_hashes(merkle.hash_chunks(data, 1024)), args.repeats)
    t_sha = median_seconds(lambda: hashlib.sha256(data).digest(), args.repeats)
    rows.append(("Merkle root, 2^18 leaves of 1 KiB", t_tree, 0.6, "one SHA-256 pass over 256 MiB", t_sha))

    # 3. one opening verification at n = k = 8192 (exact row), B made beforehand
    params = ChallengeParams(bytes(range(1, 33)), 4, 8192, 8192, 1)
    c = reference.CpuBackend().round_c(params, 0, bytes(32))
    tree = reference.round_tree(c)
    opening = Opening(0, 2, c[2], tuple(reference.row_path(tree, params, 2)))
    ref = ChallengeReference(params)
    t0 = time.perf_counter()
    ref.b_float  # noqa: B018  (made once per challenge)
    t_b = time.perf_counter() - t0
    t_open = median_seconds(lambda: verify_opening(params, [tree.root], opening, ref), args.repeats)
    key = a_key(params.seed, 0, bytes(32))
    t_row = median_seconds(lambda: reference.nibble_matrix(key, 1, 8192, row_offset=2), args.repeats)
    rows.append(("opening verification n=k=8192 (exact)", t_open, 0.1, "one A row made alone", t_row))

    print(f"CPU benchmarks, median of {args.repeats}; B for n=k=8192 made once in {t_b:.3f} s")
    print("| what | seconds | target | within | baseline | baseline s | ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    ok = True
    for name, secs, target, base_name, base in rows:
        within = secs <= target
        ok &= within
        print(f"| {name} | {secs:.4f} | <= {target} | {'yes' if within else 'NO'} | {base_name} | {base:.4f} | "
              f"{secs / base:.1f}x |")
    # what every signed gateway request pays (verifier.signatures, OpenSSL through `cryptography`)
    from gpuproof.verifier import signatures

    signer = signatures.new_private_key()
    public, message = signatures.public_key_bytes(signer), bytes(200)
    sig = signatures.sign(signer, message)

    def verify_1000() -> None:
        for _ in range(1000):
            signatures.verify(public, message, sig)

    t_verify = median_seconds(verify_1000, args.repeats)
    print(f"\nEd25519 verification of a signed request: {t_verify:.3f} ms each (median of {args.repeats} x 1000)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
