#!/usr/bin/env python3
"""Print the attack-suite table of docs/threat-model.md: every strategy many times, against its bound.

    python bench/attack_table.py [--runs 1000]

Correctness attacks play whole challenges at m=32, n=256, k=64, R=4 with s=32 opened rows on the CPU
reference; timing attacks simulate the clock from the timing model at the real Hopper sizing, on simulated
100 simulated cards per row, each card's efficiency drawn once and kept, as a real card's is.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpuproof.simulators.protocol import SMALL_SHAPE, STRATEGIES, detect, simulate_timing  # noqa: E402
from gpuproof.verifier.protocol import Verifier  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    args = parser.parse_args()
    verifier = Verifier()
    t0 = time.perf_counter()
    rows = [detect(f, args.runs, verifier) for f in STRATEGIES]
    timing = [simulate_timing("h100-sxm", "h100-sxm", 10 * args.runs, verifier)]
    for claimed, actual in (("h100-sxm", "a100-80gb"), ("h100-sxm", "rtx-4090"), ("h100-sxm", "l40s"),
                            ("h100-sxm", "h100-pcie"), ("h200", "h100-sxm")):
        timing.append(simulate_timing(claimed, actual, 10 * args.runs, verifier, cards=100))
    m, n, k, r = SMALL_SHAPE
    print(f"Attack suite: correctness at m={m} n={n} k={k} R={r}, s={verifier.config.spot_checks}; "
          f"timing at the Hopper sizing ({time.perf_counter() - t0:.0f} s)\n")
    print("| strategy | what it does | runs | passed | detected | bound on passing | within bound |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row.strategy} | {row.description} | {row.runs} | {row.passed} | {row.detection:.1%} | "
              f"{row.bound:.3g} | {'yes' if row.consistent else 'NO'} |")
    print("\n| timing | cards | challenges | flagged slower-than-claimed | cards flagged every time "
          "| cards never flagged |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in timing:
        print(f"| {row.strategy} | {row.cards} | {row.runs} | {row.runs - row.passed} ({row.detection:.1%}) | "
              f"{row.cards_always} | {row.cards_never} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
