#!/usr/bin/env python3
"""Run the CPU benchmark suite and write its results and plots to a directory.

    python bench/run_all.py --out DIR [--quick]

Runs bench/bench_suite.py with pytest-benchmark (CPU reference round, Merkle build, verification of a
Hopper-class challenge, checkpoint commitment, gateway score reads, the challenge flow under load), then
prints one table and writes to DIR: benchmarks.json (pytest-benchmark's own output), summary.md (the
table), medians.png (each benchmark's median against its target) and distributions.png (every timed
round). Nothing is written into the repository: without --out a new temporary directory is used and
printed. --quick shrinks every size (seconds instead of minutes; its figures are not the reported ones).
The GPU has its own script: `python3 bench/device_check.py` on a machine with CuPy.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def table(benchmarks: list[dict]) -> str:
    lines = ["| benchmark | size | median s | min s | max s | rounds | target s | within |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for b in benchmarks:
        st, extra = b["stats"], b.get("extra_info", {})
        target = extra.get("target_s")
        within = "-" if target is None else ("yes" if st["median"] <= target else "**no**")
        lines.append(f"| {extra.get('what', b['name'])} | {extra.get('size', '')} | {st['median']:.4g} | "
                     f"{st['min']:.4g} | {st['max']:.4g} | {st['rounds']} | "
                     f"{'-' if target is None else f'{target:.3g}'} | {within} |")
    return "\n".join(lines)


def plots(benchmarks: list[dict], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [b.get("extra_info", {}).get("what", b["name"]).split(" (")[0] for b in benchmarks]
    medians = [b["stats"]["median"] for b in benchmarks]
    targets = [b.get("extra_info", {}).get("target_s") for b in benchmarks]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    y = range(len(names))
    ax.barh(list(y), medians, color="#2da44e", label="median")
    for i, t in enumerate(targets):
        if t is not None:
            ax.plot([t, t], [i - 0.4, i + 0.4], color="#a40e26", linewidth=2, label="target" if i == 0 else None)
    ax.set_yticks(list(y), names)
    ax.set_xscale("log")
    ax.set_xlabel("seconds (log scale)")
    ax.set_title("gpuproof CPU benchmarks: median against target")
    ax.legend(loc="lower right")
    fig.tight_layout()
    medians_png = out / "medians.png"
    fig.savefig(medians_png, dpi=120)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.boxplot([b["stats"].get("data") or [b["stats"]["median"]] for b in benchmarks], orientation="horizontal")
    ax.set_yticks(range(1, len(names) + 1), names)
    ax.set_xscale("log")
    ax.set_xlabel("seconds per round (log scale)")
    ax.set_title("gpuproof CPU benchmarks: every timed round")
    fig.tight_layout()
    dist_png = out / "distributions.png"
    fig.savefig(dist_png, dpi=120)
    plt.close(fig)
    return [medians_png, dist_png]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="directory for the results (default: a new temporary one)")
    parser.add_argument("--quick", action="store_true", help="small sizes: proves the suite runs")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="gpuproof-bench-"))
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"--out: cannot create {out}: {exc.strerror}", file=sys.stderr)
        return 2
    result = out / "benchmarks.json"
    env = dict(os.environ, GPUPROOF_BENCH_QUICK="1" if args.quick else "0")
    cmd = [sys.executable, "-m", "pytest", str(ROOT / "bench" / "bench_suite.py"), "-q", "-p", "no:cacheprovider",
           "-o", "python_files=bench_suite.py", "-o", "testpaths=", "--benchmark-only",
           "--benchmark-disable-gc", "--benchmark-save-data", f"--benchmark-json={result}",
           "--benchmark-columns=median,min,max,rounds"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env)
    if proc.returncode != 0 or not result.exists():
        print(f"the benchmark suite failed (pytest exit {proc.returncode}); see the output above", file=sys.stderr)
        return 1
    data = json.loads(result.read_text())
    benchmarks = data["benchmarks"]
    summary = table(benchmarks)
    machine = data.get("machine_info", {})
    cpu = machine.get("cpu", {}).get("brand_raw", "")
    header = (f"gpuproof CPU benchmarks, {data.get('datetime', '')[:19]} UTC, {cpu}, Python "
              f"{machine.get('python_version', '')}{' (quick sizes)' if args.quick else ''}")
    (out / "summary.md").write_text(header + "\n\n" + summary + "\n")
    pngs = plots(benchmarks, out)
    print("\n" + header + "\n\n" + summary + "\n")
    print(f"results in {out}: benchmarks.json, summary.md, " + ", ".join(p.name for p in pngs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
