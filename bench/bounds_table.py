#!/usr/bin/env python3
"""Print the sizing, timing-threshold and cheating-bound tables of docs/protocol.md and
docs/threat-model.md from the profiles file and the verifier's own functions.

    python bench/bounds_table.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpuproof.verifier.profiles import load_profiles  # noqa: E402
from gpuproof.verifier.protocol import cheat_bound  # noqa: E402
from gpuproof.verifier.timing import (  # noqa: E402
    TimingConfig,
    format_rate,
    honest_failure_probability,
    size_challenge,
    thresholds,
)

KEYS = ["h200", "h200-nvl", "h100-sxm", "h100-nvl", "h100-pcie", "a100-80gb", "a100-40gb", "l40s", "rtx-4090",
        "rtx-3090", "l4", "t4", "cpu-reference"]


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
    print("\n| claimed | slowest accepted rate | slower card skipping rows: fastest, fraction of rows, P(pass) "
          "| lesser cards that are not slower (timing cannot separate them) | stated P(pass), worst case "
          "| better cards that also pass |")
    print("| --- | --- | --- | --- | --- | --- |")
    for key, params, t in rows:
        bound, model = cheat_bound(params, profiles[key], t, 32, profiles, config.max_rtt_allowance_s)
        lesser = model["lesser_indistinguishable"]
        better = [k for k in model["indistinguishable_by_timing"] if k not in lesser]
        worst = f"**{bound:.2g}** ({model['worst_case_substitute']})" if lesser else \
            f"{bound:.2g} ({model['worst_case_substitute'] or model['substitute']})"
        print(f"| {key} | {format_rate(model['slowest_accepted_tops'] * 1e12)} | {model['substitute']}, "
              f"{model['max_fraction_of_rows']:.3f}, {model['slower_card_bound']:.2g} | {', '.join(lesser) or '-'} | "
              f"{worst} | {', '.join(better) or '-'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
