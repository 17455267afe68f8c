"""The gateway as it runs: uvicorn processes on loopback, a provider over real HTTP with the CPU backend,
and two gateway processes on one database behaving as one service."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from gateway.client import registration, signed_headers
from kernels.backend import Opening
from kernels.reference import CpuBackend
from kernels.spec import ChallengeParams
from verifier import signatures, transcript

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, database_url: str, data_dir: Path) -> None:
        self.port = free_port()
        env = dict(os.environ, GPUPROOF_DATABASE_URL=database_url, GPUPROOF_DATA_DIR=str(data_dir),
                   GPUPROOF_VERIFY_TEST_SHAPE="16,256,64,3")
        self.proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "gateway.asgi:app", "--host", "127.0.0.1",
                                      "--port", str(self.port), "--log-level", "warning"], env=env, cwd=ROOT,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited: {self.proc.stdout.read()}")
            try:
                if httpx.get(f"{self.base}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError("gateway did not become ready in 30 s")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)


@pytest.fixture
def servers(database_url, tmp_path):
    started = []

    def start() -> Server:
        server = Server(database_url, tmp_path / "data")
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def signed_post(client: httpx.Client, key, pid: str, path: str, payload: dict) -> httpx.Response:  # noqa: ANN001
    import json

    body = json.dumps(payload).encode()
    return client.post(path, content=body, headers=signed_headers(key, pid, "POST", path, body))


def test_provider_flow_over_http(servers):
    server = servers()
    key = signatures.new_private_key()
    with httpx.Client(base_url=server.base, timeout=30) as client:
        pid = client.post("/v1/providers", json=registration(key, "http", [{"model": "cpu-reference",
                                                                            "vram_gib": 4}])).json()["id"]
        c = signed_post(client, key, pid, f"/v1/providers/{pid}/challenges", {"device": 0}).json()
        params = ChallengeParams(bytes.fromhex(c["seed"]), c["m"], c["n"], c["k"], c["rounds"])
        roots = CpuBackend().run(params)
        req = signed_post(client, key, pid, f"/v1/challenges/{c['challenge_id']}/commitment",
                          {"roots": [r.hex() for r in roots]}).json()
        openings = []
        for r, i in sorted({tuple(p) for p in req["pairs"]}):
            values, path = CpuBackend().open(params, r, i, roots)
            openings.append(Opening(r, i, values, tuple(path)).to_json())
        verdict = signed_post(client, key, pid, f"/v1/challenges/{c['challenge_id']}/openings",
                              {"openings": openings}).json()
        assert verdict["outcome"] == "pass", verdict
        doc = client.get(f"/v1/challenges/{c['challenge_id']}/transcript").json()
        assert transcript.recheck(doc)[1] == []


def test_two_gateway_processes_on_one_database_are_one_service(servers):
    a, b = servers(), servers()
    key = signatures.new_private_key()
    with httpx.Client(base_url=a.base, timeout=30) as ca, httpx.Client(base_url=b.base, timeout=30) as cb:
        pid = ca.post("/v1/providers", json=registration(key, "two", [{"model": "cpu-reference",
                                                                       "vram_gib": 4}])).json()["id"]
        c = signed_post(ca, key, pid, f"/v1/providers/{pid}/challenges", {"device": 0}).json()  # issued on A
        params = ChallengeParams(bytes.fromhex(c["seed"]), c["m"], c["n"], c["k"], c["rounds"])
        roots = CpuBackend().run(params)
        req = signed_post(cb, key, pid, f"/v1/challenges/{c['challenge_id']}/commitment",  # committed on B
                          {"roots": [r.hex() for r in roots]}).json()
        openings = []
        for r, i in sorted({tuple(p) for p in req["pairs"]}):
            values, path = CpuBackend().open(params, r, i, roots)
            openings.append(Opening(r, i, values, tuple(path)).to_json())
        verdict = signed_post(ca, key, pid, f"/v1/challenges/{c['challenge_id']}/openings",  # opened on A
                              {"openings": openings}).json()
        assert verdict["outcome"] == "pass", verdict
        head_a, head_b = ca.get("/v1/log/head").json(), cb.get("/v1/log/head").json()
        assert head_a["root"] == head_b["root"] and head_a["public_key"] == head_b["public_key"]
        assert cb.get(f"/v1/providers/{pid}/trust").json()["evidence"] == 1
