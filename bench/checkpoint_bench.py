#!/usr/bin/env python3
"""Committing a checkpoint on the CPU: GB/s of state hashed into the root, one core.

    python bench/checkpoint_bench.py [--gib 1]

The state is four float32 tensors summing to --gib GiB. Baseline in the same process: one hashlib
SHA-256 pass over the same bytes (the floor for any SHA-256 commitment). Target (issue 7): >= 0.8 GB/s.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from gpuproof.verifier import checkpoints  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0)
    args = parser.parse_args()
    per = int(args.gib * 2**30 / 4 / 4)
    rng = np.random.default_rng(0)
    state = {f"layer{i}": rng.standard_normal(per, dtype=np.float32) for i in range(4)}
    nbytes = sum(a.nbytes for a in state.values())
    t0 = time.perf_counter()
    checkpoints.root_cpu(state)
    t_commit = time.perf_counter() - t0
    t0 = time.perf_counter()
    for a in state.values():
        hashlib.sha256(a.data).digest()
    t_sha = time.perf_counter() - t0
    print("| state | commit s | commit GB/s | target | baseline: one SHA-256 pass, GB/s | ratio |")
    print("| --- | --- | --- | --- | --- | --- |")
    print(f"| {nbytes / 2**30:.2f} GiB | {t_commit:.3f} | {nbytes / t_commit / 1e9:.2f} | >= 0.8 | "
          f"{nbytes / t_sha / 1e9:.2f} | {t_commit / t_sha:.2f}x |")
    return 0 if nbytes / t_commit / 1e9 >= 0.8 else 1


if __name__ == "__main__":
    sys.exit(main())
