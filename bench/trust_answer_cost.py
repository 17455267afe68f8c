#!/usr/bin/env python3
"""What computing a trust answer costs, with and without the verdict records held for it.

    python bench/trust_answer_cost.py [--verdicts 20] [--calls 200]

Serves a gateway (uvicorn, SQLite in a temporary directory), gives one provider `--verdicts` verdicts
through the real API, stops it, and then computes that provider's trust answer in this process
(gateway.routers.trust.trust_answer, what a miss and each refresh of the read entry run) `--calls` times:
with the records held (gateway.trust_cache.HeldEvidence: one row read when the evidence did not change)
and without (every verdict read, as before), in turns, five rounds. Prints CPU milliseconds per call
(thread time: the GIL time a refresh takes from the event loop's thread).
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
    parser.add_argument("--verdicts", type=int, default=20)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    env = dict(os.environ, GPUPROOF_DATA_DIR=str(tmp), GPUPROOF_VERIFY_TEST_SHAPE="64,512,256,4",
               GPUPROOF_IP_RATE_PER_S="1000000", GPUPROOF_PROVIDER_RATE_PER_S="1000000",
               GPUPROOF_CHALLENGE_INTERVAL_S="0")
    server, base = gb.serve("gpuproof.gateway.asgi:app", ROOT, env)
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            key, pid = gb.new_provider(client, "bench")
            for _ in range(args.verdicts):
                gb.run_challenge(client, key, pid)
    finally:
        gb.stop(server)
    os.environ.update(GPUPROOF_DATA_DIR=str(tmp), GPUPROOF_MAINTENANCE_INTERVAL_S="0")
    from gpuproof.gateway.app import create_app
    from gpuproof.gateway.routers.trust import trust_answer
    from gpuproof.gateway.trust_cache import HeldEvidence

    state = create_app().state.gp

    def per_call_ms(held: HeldEvidence | None) -> float:
        state.trust_cache.held = held
        trust_answer(state, pid)  # (holds the records, when held)
        started = time.thread_time()
        for _ in range(args.calls):
            trust_answer(state, pid)
        return (time.thread_time() - started) / args.calls * 1e3

    held, every = [], []
    for _ in range(5):
        held.append(per_call_ms(HeldEvidence()))
        every.append(per_call_ms(None))
    print(f"| trust answer of a provider with {args.verdicts} verdicts, CPU ms a call (median of 5 rounds of "
          f"{args.calls}) | every verdict read | records held | ratio |")
    print("| --- | --- | --- | --- |")
    print(f"| SQLite | {statistics.median(every):.3f} | {statistics.median(held):.3f} | "
          f"{statistics.median(held) / statistics.median(every):.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
