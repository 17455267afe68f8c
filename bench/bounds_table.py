#!/usr/bin/env python3
"""Print the sizing, timing-threshold and cheating-bound tables of docs/protocol.md and
docs/threat-model.md from the profiles file and the verifier's own functions.

    python bench/bounds_table.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from verifier.profiles import load_profiles  # noqa: E402
from verifier.protocol import cheat_bound  # noqa: E402
from verifier.timing import TimingConfig, honest_failure_probability, size_challenge, thresholds  # noqa: E402

KEYS = ["h200", "h100-sxm", "h100-pcie", "a100-80gb", "l40s", "rtx-4090", "rtx-3090", "l4", "t4", "cpu-reference"]


def main() -> int:
    config, profiles = TimingConfig(), load_profiles()
    print("| profile | m, n, k | rounds | expected s | fast limit s | slow limit s | deadline s | P(false failure) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    rows = []
    for key in KEYS:
        p = profiles[key]
        params = size_challenge(bytes(32), p, config)
        t = thresholds(params, p, config)
        rows.append((key, params, t))
        print(f"| {key} | {params.m}, {params.n}, {params.k} | {params.rounds} | {t.expected_s:.3f} | {t.fast_s:.3f} | "
              f"{t.slow_s:.3f} | {t.deadline_s:.1f} | {honest_failure_probability(params, p, config):.1e} |")
    print("\n| claimed | substitute | max fraction of rows | P(pass) bound (s=32) "
          "| slower cards timing cannot tell apart |")
    print("| --- | --- | --- | --- | --- |")
    for key, params, t in rows:
        bound, model = cheat_bound(params, profiles[key], t, 32, profiles, config.max_rtt_allowance_s)
        print(f"| {key} | {model['substitute']} | {model['max_fraction_of_rows']:.3f} | {bound:.2g} | "
              f"{', '.join(model['indistinguishable_by_timing']) or '-'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
