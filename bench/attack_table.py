#!/usr/bin/env python3
"""Print the attack-suite table of docs/threat-model.md: every strategy many times, against its bound.

    python bench/attack_table.py [--runs 1000]

Correctness attacks play whole challenges at m=32, n=256, k=64, R=4 with s=32 opened rows on the CPU
reference; timing attacks simulate the clock from the timing model at the real Hopper sizing.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from verifier.adversary import SMALL_SHAPE, STRATEGIES, detect, simulate_timing  # noqa: E402
from verifier.protocol import Verifier  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    args = parser.parse_args()
    verifier = Verifier()
    t0 = time.perf_counter()
    rows = [detect(f, args.runs, verifier) for f in STRATEGIES]
    rows.append(simulate_timing("h100-sxm", "h100-sxm", 10 * args.runs, verifier))
    for actual in ("a100-80gb", "rtx-4090", "l40s", "h100-pcie"):
        rows.append(simulate_timing("h100-sxm", actual, args.runs, verifier))
    m, n, k, r = SMALL_SHAPE
    print(f"Attack suite: correctness at m={m} n={n} k={k} R={r}, s={verifier.config.spot_checks}; "
          f"timing at the Hopper sizing ({time.perf_counter() - t0:.0f} s)\n")
    print("| strategy | what it does | runs | passed | detected | bound on passing | within bound |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        bound = "-" if row.description == "timing only" else f"{row.bound:.3g}"
        print(f"| {row.strategy} | {row.description} | {row.runs} | {row.passed} | {row.detection:.1%} | {bound} | "
              f"{'yes' if row.consistent else 'NO'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
