#!/usr/bin/env python3
"""What the read entry's refresh costs while the gateway is saturated with cached trust reads.

    python bench/refresh_under_load.py [--rounds 8] [--round-seconds 4] [--every-verdict]

Serves the gateway (bench/timed_refresh_asgi.py: gateway/asgi.py's app with every trust computation and
maintenance sweep timed), gives one provider 20 verdicts through the real API, then runs wrk (one thread,
64 connections; wrk on CPU 0, the server's event loop on CPU 1, as bench/gateway_bench.py) against its
trust score for `--rounds` rounds with a pause as long between them. Prints each round's req/s, p99 and the
longest computation and any sweep within it, then the computations' mean wall and CPU time.
`--every-verdict`: no verdict records held (each computation reads every verdict, as before
gateway.trust_cache.HeldEvidence).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import gateway_bench as gb  # noqa: E402  (bench/gateway_bench.py)
import httpx  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--round-seconds", type=int, default=4)
    parser.add_argument("--every-verdict", action="store_true")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    timings = tmp / "timings.log"
    env = dict(os.environ, GPUPROOF_DATA_DIR=str(tmp), GPUPROOF_VERIFY_TEST_SHAPE="64,512,256,4",
               GPUPROOF_IP_RATE_PER_S="1000000", GPUPROOF_PROVIDER_RATE_PER_S="1000000",
               GPUPROOF_CHALLENGE_INTERVAL_S="0", TIMED_REFRESH_LOG=str(timings),
               TIMED_REFRESH_EVERY_VERDICT="1" if args.every_verdict else "0")
    server, base = gb.serve("timed_refresh_asgi:app", ROOT / "bench", env)
    rounds = []
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            key, pid = gb.new_provider(client, "bench")
            for _ in range(20):
                gb.run_challenge(client, key, pid)
        pin = (os.cpu_count() or 1) >= 2
        gb.pinned([server], {1} if pin else None)
        timings.write_text("")  # the reads' only
        for _ in range(args.rounds):
            started = time.time()
            rps, p99 = gb.wrk(f"{base}/v1/providers/{pid}/trust", args.round_seconds, 64, {0} if pin else None)
            rounds.append((started, time.time(), rps, p99))
            time.sleep(args.round_seconds)
    finally:
        gb.stop(server)
    lines = [line.split() for line in timings.read_text().splitlines()]
    trust = [(float(at), float(wall), float(cpu)) for what, at, wall, cpu in lines if what == "trust"]
    sweeps = [(float(at), float(wall)) for what, at, wall, _ in lines if what == "sweep"]
    print(f"one uvicorn worker, SQLite, wrk -t1 -c64, {args.rounds} rounds of {args.round_seconds} s; verdict "
          f"records {'not held' if args.every_verdict else 'held'}")
    print("| round | req/s | p99 ms | longest computation ms (wall) | sweeps ms (wall) |")
    print("| --- | --- | --- | --- | --- |")
    for n, (start, end, rps, p99) in enumerate(rounds, 1):
        within = [wall for at, wall, _ in trust if start <= at <= end]
        swept = [f"{wall:.1f}" for at, wall in sweeps if start <= at <= end]
        print(f"| {n} | {rps:.0f} | {p99:.1f} | {max(within, default=0):.1f} | {', '.join(swept) or '-'} |")
    if trust:
        print(f"\n{len(trust)} computations while read: mean {statistics.mean(w for _, w, _ in trust):.2f} ms wall, "
              f"{statistics.mean(c for _, _, c in trust):.2f} ms CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
