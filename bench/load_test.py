#!/usr/bin/env python3
"""Load: simulated agents running small challenges plus 64 connections of score reads, for a while.

    python bench/load_test.py [--agents 200] [--seconds 60] [--processes 1|2] [--database-url URL]

One gateway process on SQLite (default), or `--processes 2` on PostgreSQL (`--database-url`, a fresh
database is made and dropped). The agents (asyncio, httpx, bounded at --agents concurrent) each register
and then play challenges (m=16, n=256, k=64, R=3) end to end, one every --interval seconds (the
gateway's challenge interval; agents poll in between, as real agents do); wrk reads
GET /v1/providers/{id}/trust with 64 connections (split over the processes). Afterwards: every verdict an
agent received must be on record with the same outcome, no 5xx anywhere, the reads' p99, and each
gateway's resident memory at the start and the end of the load. Prints a table; exit 1 on a failure.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import wrk as wrk_report  # noqa: E402  (bench/wrk.py)
from gpuproof.gateway.models import Challenge  # noqa: E402
from sqlalchemy import create_engine, select  # noqa: E402

from tests.support.load import agents  # noqa: E402
from tests.support.server import Server  # noqa: E402


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def wrk(url: str, connections: int, seconds: int) -> subprocess.Popen:
    return subprocess.Popen(["wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds}s", "--latency", url],
                            stdout=subprocess.PIPE, text=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--processes", type=int, default=1, choices=(1, 2))
    parser.add_argument("--database-url", default=None, help="PostgreSQL server URL (for --processes 2)")
    parser.add_argument("--interval", type=float, default=5.0,
                        help="seconds between challenges of one agent (the gateway's challenge interval)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    dropdb = None
    if args.processes == 2:
        import psycopg

        admin = args.database_url or "postgresql+psycopg://postgres@127.0.0.1:5432/test"
        name = f"gp_load_{secrets.token_hex(4)}"
        with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=test", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = admin.rsplit("/", 1)[0] + f"/{name}"
        dropdb = name
    else:
        url = f"sqlite:///{tmp / 'gw.db'}"
    env: dict[str, Any] = {"GPUPROOF_CHALLENGE_INTERVAL_S": str(args.interval),
                           "GPUPROOF_PROVIDER_RATE_PER_S": "1000000", "GPUPROOF_IP_RATE_PER_S": "1000000",
           "GPUPROOF_REGISTRATIONS_PER_S_GLOBAL": "1000000"}
    servers = [Server(url, tmp / "gw", None, **env).start() for _ in range(args.processes)]
    stats: dict = {"verdicts": {}, "errors": {}}
    reads_target: list[str] = []
    ok = True
    try:
        rss_start = [rss_mib(s.pid) for s in servers]
        loop_task = asyncio.new_event_loop()
        # the agents run in this process; wrk starts once the first provider exists
        import threading

        runner = threading.Thread(target=lambda: loop_task.run_until_complete(
            agents([s.base for s in servers], args.agents, args.seconds, stats, reads_target)))
        runner.start()
        while not reads_target:
            time.sleep(0.05)
        time.sleep(2)  # registrations under way; reads from here on
        per = 64 // len(servers)
        readers = [wrk(f"{s.base}/v1/providers/{reads_target[0]}/trust", per, max(5, args.seconds - 5))
                   for s in servers]
        mid = time.monotonic() + 5
        while time.monotonic() < mid:
            time.sleep(0.1)
        rss_warm = [rss_mib(s.pid) for s in servers]
        half = time.monotonic() + max(0.0, args.seconds / 2 - 7)
        while time.monotonic() < half:
            time.sleep(0.1)
        rss_half = [rss_mib(s.pid) for s in servers]  # growth from here to the end is what "flat" rules out
        reads = [wrk_report.parse(r.communicate()[0]) for r in readers]
        runner.join()
        rss_end = [rss_mib(s.pid) for s in servers]
    finally:
        for s in servers:
            s.stop()
    engine = create_engine(url)
    with engine.connect() as c:
        judged = dict(c.execute(select(Challenge.id, Challenge.outcome).where(Challenge.state == "judged")).all())
    engine.dispose()
    if dropdb:
        import psycopg

        with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=test", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dropdb}" WITH (FORCE)')
    lost = [cid for cid, outcome in stats["verdicts"].items() if judged.get(cid) != outcome]
    server_errors = stats["errors"].get("5xx", 0) + sum(r.non_2xx for r in reads)  # transport resets listed apart
    p99 = max(r.p99_ms for r in reads)
    ok = not lost and server_errors == 0 and p99 <= 50
    print(f"{args.processes} gateway process(es) on {'PostgreSQL' if dropdb else 'SQLite'}, {args.agents} agents "
          f"(a challenge every {args.interval:g} s each), {args.seconds} s, 64 read connections")
    print("| verdicts | lost | agent errors | 5xx | reads/s | read p99 ms | RSS MiB start -> 5 s -> half -> end |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    rss = ", ".join(f"{a:.0f} -> {b:.0f} -> {h:.0f} -> {c:.0f}"
                    for a, b, h, c in zip(rss_start, rss_warm, rss_half, rss_end, strict=True))
    print(f"| {len(stats['verdicts'])} | {len(lost)} | {stats['errors'] or 0} | {server_errors} | "
          f"{sum(r.rps for r in reads):.0f} | {p99:.1f} | {rss} |")
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
