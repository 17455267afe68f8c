#!/usr/bin/env python3
"""The trust fast path's own cost, in one process: what a cached trust read costs beyond the bare app.

    python bench/fast_path_loop.py [--calls 50000] [--rounds 15]

Calls `TrustFastPath` (gateway/app.py, over a gateway on a throw-away SQLite database, its cache holding one
entry the size of a trust answer) and the bare ASGI app (bench/bare_asgi.py) in turns, each `--calls` times
with a `send` that does nothing, `--rounds` times, and prints microseconds per call: the best round of
each (the least disturbed by the machine) and the median. No server, no network: the
Python work of the fast path alone (the cache lookup, the per-address token bucket, the counts), which
bench/gateway_bench.py measures as a share of uvicorn's whole request.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


async def per_call_us(app, scope: dict, calls: int) -> float:  # noqa: ANN001
    async def send(message: dict) -> None:
        pass

    async def receive() -> dict:
        return {}

    started = time.perf_counter()
    for _ in range(calls):
        await app(scope, receive, send)
    return (time.perf_counter() - started) / calls * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    os.environ.update(GPUPROOF_DATA_DIR=tempfile.mkdtemp(), GPUPROOF_IP_RATE_PER_S="1000000000")
    import bare_asgi
    from gpuproof.gateway.app import TrustFastPath, create_app

    fast = TrustFastPath.in_front_of(create_app())
    provider = "ab" * 16
    fast.state.trust_cache._entries[provider] = (time.monotonic() + 1e6, b"x" * len(bare_asgi.BODY))  # a hit
    scope = {"type": "http", "method": "GET", "path": f"/v1/providers/{provider}/trust", "query_string": b"",
             "root_path": "", "headers": [(b"host", b"127.0.0.1:8000")], "client": ("127.0.0.1", 5555)}

    async def rounds() -> None:
        fast_us, bare_us = [], []
        for _ in range(args.rounds):
            fast_us.append(await per_call_us(fast, scope, args.calls))
            bare_us.append(await per_call_us(bare_asgi.app, scope, args.calls))
        print(f"| of {args.rounds} rounds of {args.calls} calls | fast path us/call | bare app us/call | "
              "the fast path's own |")
        print("| --- | --- | --- | --- |")
        for name, pick in (("best", min), ("median", statistics.median)):
            print(f"| {name} | {pick(fast_us):.2f} | {pick(bare_us):.2f} | {pick(fast_us) - pick(bare_us):.2f} |")

    asyncio.run(rounds())
    return 0


if __name__ == "__main__":
    sys.exit(main())
