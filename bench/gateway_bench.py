#!/usr/bin/env python3
"""Gateway read performance: trust-score reads with wrk, against a bare-ASGI baseline in the same run.

    python bench/gateway_bench.py [--rounds 5] [--round-seconds 4] [--seconds 10] [--connections 64]

Starts one uvicorn worker on loopback (SQLite in a temporary directory), registers providers and gives
them verdicts through the real API, then runs `wrk` (Debian's package) against
GET /v1/providers/{id}/trust from a second process: first idle, then while a third process keeps
running small challenges end to end (register, poll, prove on the CPU, commit, open, verdict).

Machines differ in speed, so every figure is printed beside the server's own limit measured in the same
run: a bare ASGI app (bench/bare_asgi.py, no framework) answering a fixed JSON body as long as the trust
answer, served by uvicorn with the gateway's own settings (`gateway serve`: gpuproof.cli.admin.uvicorn_options)
and measured with the same wrk parameters. A virtual machine's speed drifts by 10% and more within a minute,
so the idle reads are measured in `--rounds` short rounds, each between two of the baseline's (bare,
gateway, bare, gateway, ..., bare): each round's ratios are to the mean of the two around it, and the
figure is their median. Targets: idle reads at >= 0.8x the baseline's req/s with a p99 within 1.25x of its
p99; p99 <= 50 ms while verifying.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import signal
import socket
import statistics
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


def wrk(url: str, seconds: int, connections: int, cpus: set[int] | None = None) -> tuple[float, float]:
    """wrk's req/s and p99 (ms) against `url`; run on `cpus` only when given."""
    pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    out = subprocess.run(["wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds}s", "--latency", url],
                         capture_output=True, text=True, check=True, preexec_fn=pin).stdout
    result = wrk_report.parse(out)
    if result.non_2xx:
        raise SystemExit(f"wrk saw {result.non_2xx} error responses:\n{out}")
    return result.rps, result.p99_ms


# uvicorn with the gateway's settings (gpuproof.cli.admin.uvicorn_options, as `gateway serve` runs it): argv is
# the app's import string, the port and the directory to import it from.
SERVE = ("import sys, uvicorn; from gpuproof.cli.admin import uvicorn_options; "
         "uvicorn.run(sys.argv[1], host='127.0.0.1', port=int(sys.argv[2]), workers=1, app_dir=sys.argv[3], "
         "**uvicorn_options(''))")


def serve(app: str, app_dir: Path, env: dict) -> tuple[subprocess.Popen, str]:
    """One uvicorn worker on a free loopback port serving `app`; the process and its base URL once it answers."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVE, app, str(port), str(app_dir)], env=env, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{base}/readyz", timeout=5).status_code == 200:
                return server, base
        except httpx.TransportError:
            pass
        if server.poll() is not None:
            raise SystemExit(f"{app} did not start (exit status {server.returncode})")
        time.sleep(0.1)
    server.kill()
    raise SystemExit(f"{app} did not answer within 30 s")


def stop(server: subprocess.Popen) -> None:
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()


def pinned(servers: list[subprocess.Popen], cpus: set[int] | None) -> None:
    """Each server's event loop (uvicorn's main thread, whose thread id is the process id) on `cpus`; all
    of the machine's when None."""
    for server in servers:
        os.sched_setaffinity(server.pid, cpus or set(range(os.cpu_count() or 1)))


def ratios(figure: tuple[float, float], baseline: tuple[float, float]) -> str:
    """The req/s ratio and the p99 ratio of a figure to the baseline's, as two table cells."""
    return f"{figure[0] / baseline[0]:.2f}x | {figure[1] / baseline[1]:.2f}x"


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--load-worker":
        load_worker(sys.argv[2], sys.argv[3])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--seconds", type=int, default=10, help="the reads while verifying")
    parser.add_argument("--rounds", type=int, default=5, help="idle rounds, each between two of the baseline's")
    parser.add_argument("--round-seconds", type=int, default=4)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--no-pin", action="store_true",
                        help="leave the idle reads' wrk and servers to the scheduler (by default, on a machine of "
                             "two or more CPUs, wrk runs on CPU 0 and the server's event loop on CPU 1 for the "
                             "baseline and the gateway alike: unpinned, the two sometimes share a core and the "
                             "ratio swung 0.58-0.83x from run to run)")
    args = parser.parse_args()
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2
    client_cpus, server_cpus = ({0}, {1}) if pin else (None, None)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    tmp = Path(tempfile.mkdtemp())
    env = dict(os.environ, GPUPROOF_DATA_DIR=str(tmp), GPUPROOF_VERIFY_TEST_SHAPE="64,512,256,4",
               GPUPROOF_IP_RATE_PER_S="1000000", GPUPROOF_PROVIDER_RATE_PER_S="1000000",
               GPUPROOF_CHALLENGE_INTERVAL_S="0")
    servers: list[subprocess.Popen] = []
    try:
        server, base = serve("gpuproof.gateway.asgi:app", ROOT, env)
        servers.append(server)
        with httpx.Client(base_url=base, timeout=30) as client:
            key, pid = new_provider(client, "bench")
            for _ in range(20):
                run_challenge(client, key, pid)
            answer = client.get(f"/v1/providers/{pid}/trust")
            answer.raise_for_status()
        server, bare_base = serve("bare_asgi:app", ROOT / "bench",
                                  dict(os.environ, BARE_ASGI_BYTES=str(len(answer.content))))
        servers.append(server)
        url = f"{base}/v1/providers/{pid}/trust"
        pinned(servers, server_cpus)
        bares = [wrk(f"{bare_base}/", args.round_seconds, args.connections, client_cpus)]
        idles = []
        for _ in range(args.rounds):
            idles.append(wrk(url, args.round_seconds, args.connections, client_cpus))
            bares.append(wrk(f"{bare_base}/", args.round_seconds, args.connections, client_cpus))
        pinned(servers, None)  # verifying needs the gateway's threads on every core
        stop_file = tmp / "stop"
        worker = subprocess.Popen([sys.executable, __file__, "--load-worker", base, str(stop_file)],
                                  stdout=subprocess.PIPE, text=True, cwd=ROOT)
        time.sleep(1)
        busy = wrk(url, args.seconds, args.connections)
        stop_file.touch()
        verified = int(worker.communicate(timeout=60)[0].strip() or 0)
    finally:
        for server in servers:
            stop(server)
        shutil.rmtree(tmp, ignore_errors=True)
    rounds = [(idle, ((before[0] + after[0]) / 2, (before[1] + after[1]) / 2))
              for idle, before, after in zip(idles, bares, bares[1:], strict=False)]
    where = "wrk on CPU 0 and each server's event loop on CPU 1 for the idle reads" if pin else "unpinned"
    print(f"one uvicorn worker each, SQLite, wrk -t1 -c{args.connections}, {args.rounds} idle rounds of "
          f"{args.round_seconds} s between the baseline's ({where}), {args.seconds} s while verifying; trust reads "
          f"of a provider with 20 verdicts ({len(answer.content)} bytes); load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("| idle round | bare ASGI req/s, before / after | gateway req/s | bare p99 ms, before / after | "
          "gateway p99 ms | req/s ratio | p99 ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for n, ((idle, bare), before, after) in enumerate(zip(rounds, bares, bares[1:], strict=False), 1):
        print(f"| {n} | {before[0]:.0f} / {after[0]:.0f} | {idle[0]:.0f} | {before[1]:.1f} / {after[1]:.1f} | "
              f"{idle[1]:.1f} | {ratios(idle, bare)} |")
    rps_ratio = statistics.median(idle[0] / bare[0] for idle, bare in rounds)
    p99_ratio = statistics.median(idle[1] / bare[1] for idle, bare in rounds)
    bare = (statistics.mean(b[0] for b in bares), statistics.mean(b[1] for b in bares))
    print()
    print("| scenario | req/s | p99 ms | req/s ratio | p99 ratio | target |")
    print("| --- | --- | --- | --- | --- | --- |")
    print(f"| bare ASGI, mean of {len(bares)} | {bare[0]:.0f} | {bare[1]:.1f} | 1 | 1 | the server's own limit |")
    print(f"| gateway idle, median of {len(rounds)} rounds | {statistics.median(i[0] for i in idles):.0f} | "
          f"{statistics.median(i[1] for i in idles):.1f} | {rps_ratio:.2f}x | {p99_ratio:.2f}x | "
          ">= 0.8x req/s, p99 <= 1.25x |")
    print(f"| gateway while verifying ({verified} challenges judged meanwhile) | {busy[0]:.0f} | {busy[1]:.1f} | "
          f"{ratios(busy, bare)} | p99 <= 50 ms |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
