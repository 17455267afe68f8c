#!/usr/bin/env python3
"""Gateway read performance: trust-score reads with wrk, idle and while challenges are verified.

    python bench/gateway_bench.py [--seconds 10] [--connections 64]

Starts one uvicorn worker on loopback (SQLite in a temporary directory), registers providers and gives
them verdicts through the real API, then runs `wrk` (Debian's package) against
GET /v1/providers/{id}/trust from a second process: first idle, then while a third process keeps
running small challenges end to end (register, poll, prove on the CPU, commit, open, verdict). Prints a
table; targets: >= 3,000 req/s with p99 <= 20 ms idle, p99 <= 50 ms under verification load.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import wrk as wrk_report  # noqa: E402  (bench/wrk.py)
from gpuproof.client import registration, signed_headers  # noqa: E402
from gpuproof.kernels.backend import Opening  # noqa: E402
from gpuproof.kernels.reference import CpuBackend  # noqa: E402
from gpuproof.kernels.spec import ChallengeParams  # noqa: E402
from gpuproof.verifier import signatures  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@functools.lru_cache(maxsize=8)
def _audience(base_url: str) -> str:
    return httpx.get(f"{base_url}/v1/identity").json()["audience"]


def audience(client: httpx.Client) -> str:
    """The gateway's audience for request signatures (GET /v1/identity, asked once)."""
    return _audience(str(client.base_url).rstrip("/"))


def run_challenge(client: httpx.Client, key, pid: str) -> dict:  # noqa: ANN001
    def post(path: str, payload: dict) -> httpx.Response:
        body = json.dumps(payload).encode()
        return client.post(path, content=body, headers=signed_headers(key, pid, "POST", path, body,
                                                                      audience=audience(client)))

    r = post(f"/v1/providers/{pid}/challenges", {"device": 0})
    if r.status_code == 204:
        return {}
    r.raise_for_status()
    c = r.json()
    params = ChallengeParams.from_json(c)
    backend = CpuBackend()
    roots = backend.run(params)
    req = post(f"/v1/challenges/{c['challenge_id']}/commitment", {"roots": [x.hex() for x in roots]}).json()
    openings = []
    for r_, i in sorted({tuple(p) for p in req["pairs"]}):
        values, path = backend.open(params, r_, i, roots)
        openings.append(Opening(r_, i, values, tuple(path)).to_json())
    return post(f"/v1/challenges/{c['challenge_id']}/openings", {"openings": openings}).json()


def new_provider(client: httpx.Client, name: str):  # noqa: ANN201
    key = signatures.new_private_key()
    r = client.post("/v1/providers", **registration(key, name, [{"model": "cpu-reference", "vram_gib": 8}],
                                                    audience=audience(client)))
    r.raise_for_status()
    return key, r.json()["id"]


def load_worker(base: str, stop_file: str) -> None:
    """Keep verifying small challenges until stop_file appears (runs in its own process)."""
    with httpx.Client(base_url=base, timeout=30) as client:
        count = 0
        while not os.path.exists(stop_file):
            key, pid = new_provider(client, f"load-{count}")
            run_challenge(client, key, pid)
            count += 1
        print(count, flush=True)


def wrk(url: str, seconds: int, connections: int) -> tuple[float, float]:
    out = subprocess.run(["wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds}s", "--latency", url],
                         capture_output=True, text=True, check=True).stdout
    result = wrk_report.parse(out)
    if result.non_2xx:
        raise SystemExit(f"wrk saw {result.non_2xx} error responses:\n{out}")
    return result.rps, result.p99_ms


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--load-worker":
        load_worker(sys.argv[2], sys.argv[3])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    tmp = Path(tempfile.mkdtemp())
    port = free_port()
    env = dict(os.environ, GPUPROOF_DATA_DIR=str(tmp), GPUPROOF_VERIFY_TEST_SHAPE="64,512,256,4",
               GPUPROOF_IP_RATE_PER_S="1000000", GPUPROOF_PROVIDER_RATE_PER_S="1000000",
               GPUPROOF_CHALLENGE_INTERVAL_S="0")
    server = subprocess.Popen([sys.executable, "-m", "uvicorn", "gpuproof.gateway.asgi:app", "--host", "127.0.0.1",
                               "--port", str(port), "--workers", "1", "--log-level", "warning", "--no-access-log"],
                              env=env, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            for _ in range(100):
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            key, pid = new_provider(client, "bench")
            for _ in range(20):
                run_challenge(client, key, pid)
        url = f"{base}/v1/providers/{pid}/trust"
        idle = wrk(url, args.seconds, args.connections)
        stop = tmp / "stop"
        worker = subprocess.Popen([sys.executable, __file__, "--load-worker", base, str(stop)], stdout=subprocess.PIPE,
                                  text=True, cwd=ROOT)
        time.sleep(1)
        busy = wrk(url, args.seconds, args.connections)
        stop.touch()
        verified = int(worker.communicate(timeout=60)[0].strip() or 0)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"one uvicorn worker, SQLite, wrk -t1 -c{args.connections} -d{args.seconds}s, trust reads of a provider "
          "with 20 verdicts")
    print("| scenario | req/s | p99 ms | target |")
    print("| --- | --- | --- | --- |")
    print(f"| idle | {idle[0]:.0f} | {idle[1]:.1f} | >= 3000 req/s, p99 <= 20 ms |")
    print(f"| while verifying ({verified} challenges judged meanwhile) | {busy[0]:.0f} | {busy[1]:.1f} | "
          "p99 <= 50 ms |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
