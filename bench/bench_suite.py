"""The CPU benchmark suite (pytest-benchmark), run by `python bench/run_all.py --out DIR`.

Each benchmark carries its target in `extra_info` (seconds, where the issues set one) and the size it ran
at; run_all.py prints the table and draws the plots. `GPUPROOF_BENCH_QUICK=1` shrinks every size (the
test suite runs it that way, to prove the command works; its figures are not the ones we report).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gpuproof.kernels import merkle, reference  # noqa: E402
from gpuproof.kernels.spec import ChallengeParams  # noqa: E402
from gpuproof.verifier import checkpoints  # noqa: E402
from gpuproof.verifier.protocol import OpeningRequest, Verifier  # noqa: E402

QUICK = os.environ.get("GPUPROOF_BENCH_QUICK") == "1"


def info(benchmark, target_s: float | None, size: str, what: str) -> None:  # noqa: ANN001
    benchmark.extra_info.update({"target_s": None if QUICK else target_s, "size": size, "what": what})


def test_reference_round(benchmark):
    n = 256 if QUICK else 1024
    params = ChallengeParams(secrets.token_bytes(32), n, n, n, 1)
    backend = reference.CpuBackend()
    backend.run(params)  # B made once per challenge, as a prover would
    info(benchmark, 0.25, f"m=n=k={n}, 1 round", "CPU reference round (generation, exact matmul, tree)")
    benchmark.pedantic(backend.run, args=(params,), rounds=3 if QUICK else 5, warmup_rounds=1)


def test_merkle_build(benchmark):
    leaves = 2**12 if QUICK else 2**18
    data = np.random.default_rng(0).integers(0, 256, leaves * 1024, dtype=np.uint8)
    info(benchmark, 0.6, f"{leaves} leaves of 1 KiB", "Merkle root (RFC 6962)")
    benchmark.pedantic(lambda: merkle.root_of_hashes(merkle.hash_chunks(data, 1024)), rounds=5, warmup_rounds=1)


def test_verify_hopper_class_challenge(benchmark):
    sys.path.insert(0, str(ROOT / "bench"))
    import verify_bench

    if QUICK:
        verify_bench.M = verify_bench.N = 1024
        verify_bench.K = 1024
    verifier = Verifier()
    challenge, roots, pairs, openings = verify_bench.build(verifier, 1)
    commitment = verifier.commit(challenge, roots, received_at=challenge.thresholds.expected_s)
    request = OpeningRequest(challenge.challenge_id, tuple(pairs), verifier.request_openings(challenge, commitment).x)
    info(benchmark, 1.5, f"m=n={verify_bench.M}, k={verify_bench.K}, s=32, one core", "verification of a challenge")

    def judge():  # noqa: ANN202
        with threadpool_limits(1):
            verdict = verifier.judge(challenge, commitment, request, openings)
        assert verdict.correctness == "pass", verdict.reasons

    benchmark.pedantic(judge, rounds=3, warmup_rounds=0)


def test_checkpoint_commitment(benchmark):
    mib = 16 if QUICK else 256
    per = mib * 2**20 // 4 // 4
    rng = np.random.default_rng(0)
    state = {f"layer{i}": rng.standard_normal(per, dtype=np.float32) for i in range(4)}
    info(benchmark, mib * 2**20 / 0.8e9, f"{mib} MiB state, 4 tensors",
         "checkpoint commitment on one core (target: 0.8 GB/s)")
    benchmark.pedantic(checkpoints.root_cpu, args=(state,), rounds=3, warmup_rounds=1)


@pytest.fixture(scope="module")
def gateway():
    """A gateway in its own process on loopback (one uvicorn worker, SQLite), with one registered provider."""
    from tests.support.server import Server

    with tempfile.TemporaryDirectory() as tmp:
        server = Server(f"sqlite:///{tmp}/gw.db", Path(tmp) / "gw", GPUPROOF_VERIFY_TEST_SHAPE="64,512,256,4",
                        GPUPROOF_CHALLENGE_INTERVAL_S="0", GPUPROOF_PROVIDER_RATE_PER_S="10000",
                        GPUPROOF_IP_RATE_PER_S="100000").start()
        try:
            yield server.base
        finally:
            server.stop()


def _provider(base: str):  # noqa: ANN202
    from gpuproof.client import GatewayClient
    from gpuproof.verifier import signatures

    client = GatewayClient(base, key=signatures.new_private_key())
    client.register("bench", [{"model": "cpu-reference", "vram_gib": 1}])
    return client


def test_gateway_score_read(benchmark, gateway):
    client = _provider(gateway)
    url = f"/v1/providers/{client.provider_id}/trust"
    with httpx.Client(base_url=gateway) as http:
        http.get(url)
        info(benchmark, 0.020, "one keep-alive connection, idle gateway", "gateway score read (GET .../trust)")
        benchmark.pedantic(lambda: http.get(url).raise_for_status(), rounds=50 if QUICK else 500, warmup_rounds=5)
    client.close()


def test_challenge_flow_under_load(benchmark, gateway):
    """One full challenge (poll, commit, open, verdict) while simulated agents run theirs."""
    from tests.support.load import agents  # the simulated agents of bench/load_test.py

    client = _provider(gateway)
    backend = reference.CpuBackend()
    background = 4 if QUICK else 32

    def flow() -> None:
        from gpuproof.kernels.backend import Opening

        c, probe, _ = client.next_challenge(0)
        assert c is not None
        params = c.params()
        roots = backend.run(params)
        req = client.commit(c.challenge_id, roots)
        openings = []
        for r, i in sorted(set(req.pairs)):
            values, path = backend.open(params, r, i, roots)
            openings.append(Opening(r, i, values, tuple(path)).to_json())
        assert client.open(c.challenge_id, openings).outcome == "pass"

    stats: dict = {"verdicts": {}, "errors": {}}
    seconds = 10 if QUICK else 40

    loop_thread = threading.Thread(target=lambda: asyncio.run(agents([gateway], background, seconds, stats, [])),
                                   daemon=True)
    loop_thread.start()
    time.sleep(1.0)
    info(benchmark, None, f"m,n,k,R=64,512,256,4 with {background} simulated agents running",
         "challenge flow under load (poll, commit, open, verdict)")
    benchmark.pedantic(flow, rounds=5 if QUICK else 20, warmup_rounds=1)
    loop_thread.join(timeout=seconds + 30)
    benchmark.extra_info["background_verdicts"] = len(stats["verdicts"])
    benchmark.extra_info["background_5xx"] = stats["errors"].get("5xx", 0)
    client.close()
