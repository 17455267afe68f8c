"""The provider agent as a user runs it, against a real gateway on loopback (uvicorn subprocess)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from sqlalchemy import create_engine, func, select

from gateway.models import Challenge, LogEntry
from tests.support.server import ROOT, Server


def cli(*args: str, env: dict, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture
def env(tmp_path):
    e = dict(os.environ, GPUPROOF_CONFIG_DIR=str(tmp_path / "config"))
    e.pop("GPUPROOF_GATEWAY", None)
    return e


@pytest.fixture
def server(tmp_path):
    s = Server(f"sqlite:///{tmp_path / 'gw.db'}", tmp_path / "gw", GPUPROOF_CHALLENGE_INTERVAL_S="0",
               GPUPROOF_VERIFY_TEST_SHAPE="64,512,256,4").start()
    yield s
    s.stop()


def one_line_error(out: subprocess.CompletedProcess[str], code: int, fragment: str) -> None:
    assert out.returncode == code, (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and "Traceback" not in out.stderr, out.stderr


def test_register_run_and_score_rises(env, server):
    assert cli("agent", "init", "--gateway", server.base, env=env).returncode == 0
    one_line_error(cli("agent", "init", env=env), 2, "--force")
    reg = cli("agent", "register", "--gpu", "cpu-reference", "--name", "box", env=env)
    assert reg.returncode == 0, reg.stderr
    assert "profile cpu-reference" in reg.stdout
    before = json.loads(cli("agent", "status", "--json", env=env).stdout)["trust"]
    run = cli("agent", "run", "--max-challenges", "4", env=env)
    assert run.returncode == 0, run.stderr
    events = [json.loads(line) for line in run.stdout.splitlines()]
    verdicts = [e for e in events if e["event"] == "verdict"]
    assert len(verdicts) >= 4 and all(v["outcome"] == "pass" for v in verdicts)
    after = json.loads(cli("agent", "status", "--json", env=env).stdout)["trust"]
    assert after["score"] > before["score"] and after["lower_bound"] > before["lower_bound"]
    pid = cli("agent", "whoami", env=env).stdout.strip()
    trust = cli("trust", pid, "--gateway", server.base, env=env)
    assert trust.returncode == 0 and "verified class cpu-reference" in trust.stdout
    selftest = cli("agent", "selftest", "--shape", "64,512,256,4", env=env)
    assert selftest.returncode == 0 and "would PASS" in selftest.stdout


def test_bad_config_and_unreachable_gateway_are_one_clear_line(env, server, tmp_path):
    one_line_error(cli("agent", "status", env=env), 1, "gpuproof agent init")
    assert cli("agent", "init", env=env).returncode == 0
    one_line_error(cli("agent", "register", "--gpu", "cpu-reference", env=env), 2, "--gateway")
    one_line_error(cli("agent", "status", "--gateway", "http://127.0.0.1:9", env=env), 1, "gateway unreachable")
    one_line_error(cli("agent", "register", "--gateway", server.base, env=env), 2, "no GPU found")
    key = tmp_path / "config" / "provider.key"
    key.write_text("not a key")
    one_line_error(cli("agent", "status", "--gateway", server.base, env=env), 1, "not a gpuproof provider key")
    (tmp_path / "config" / "agent.toml").write_text("gateway = [unclosed")
    one_line_error(cli("agent", "status", env=env), 2, "config file")


def test_gateway_killed_and_restarted_mid_challenge_nothing_counted_twice(env, server, tmp_path):
    assert cli("agent", "init", "--gateway", server.base, env=env).returncode == 0
    assert cli("agent", "register", "--gpu", "cpu-reference", env=env).returncode == 0
    # backoff capped at 5 s (60 by default): after three restarts in a row its doubling otherwise reaches
    # 32-60 s, and on a slow machine the agent was still waiting when the test's two minutes ran out
    agent = subprocess.Popen([sys.executable, "-m", "agent.cli", "agent", "run"],
                             env=env | {"GPUPROOF_POLL_MAX_S": "5"}, cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    engine = create_engine(f"sqlite:///{tmp_path / 'gw.db'}")

    def judged() -> int:
        with engine.connect() as c:
            return c.execute(select(func.count()).where(Challenge.state == "judged")).scalar_one()

    try:
        deadline = time.monotonic() + 60
        while judged() < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        for crash in range(3):
            time.sleep(0.05 + 0.07 * crash)  # somewhere inside a challenge
            server.kill()
            time.sleep(1.0)
            server.start()
        target = judged() + 3
        while judged() < target and time.monotonic() < deadline + 60:
            time.sleep(0.1)
        assert judged() >= target, "the agent did not carry on after the restarts"
    finally:
        agent.send_signal(signal.SIGTERM)
        out, err = agent.communicate(timeout=60)
    assert agent.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert events[-1]["event"] == "stopped"
    assert any(e["event"] in ("retry", "gateway-error") for e in events), "the crashes were not noticed"
    with engine.connect() as c:
        rows = c.execute(select(Challenge.id, Challenge.state)).all()
        verdict_entries = c.execute(select(LogEntry.body).where(LogEntry.kind == "verdict")).scalars().all()
    ids = [json.loads(b)["challenge_id"] for b in verdict_entries]
    assert len(ids) == len(set(ids)), "a verdict was logged twice"
    assert sorted(ids) == sorted(cid for cid, state in rows if state == "judged")
    agent_verdicts = [e["challenge_id"] for e in events if e["event"] == "verdict"]
    assert len(agent_verdicts) == len(set(agent_verdicts))


def test_train_and_replay_from_the_command_line(env, server, tmp_path):
    """A provider trains the reference job under a checkpoint policy; a validator replays and signs."""
    from gateway import admin
    from gateway.client import GatewayClient
    from gateway.db import Database

    assert cli("agent", "init", "--gateway", server.base, env=env).returncode == 0
    assert cli("agent", "register", "--gpu", "cpu-reference", env=env).returncode == 0
    pid = cli("agent", "whoami", env=env).stdout.strip()
    db = Database(f"sqlite:///{tmp_path / 'gw.db'}")
    market = GatewayClient(server.base, admin.create_api_key(db, "market", ["jobs", "settle"]))
    replay_key = admin.create_api_key(db, "validator", ["replay"])
    policy = {"interval": 5, "segments": 2, "chunks": 4, "workload": {"name": "mlp", "params": {"hidden": 16}}}
    job = market.create_job("renter", pid, "usd:1", policy)["id"]
    train = cli("agent", "train", "--job", job, "--steps", "20", "--store", str(tmp_path / "ckpt"), env=env)
    assert train.returncode == 0, train.stderr
    assert "5 commitments" in train.stdout and train.stdout.count("evidence sent") == 2, train.stdout
    one_line_error(cli("replay", "--job", job, "--gateway", server.base, env=env), 2, "--api-key")
    one_line_error(cli("replay", "--job", "nope", "--gateway", server.base, env=env), 2, "--job")
    validator_env = dict(env, GPUPROOF_CONFIG_DIR=str(tmp_path / "validator"), GPUPROOF_API_KEY=replay_key)
    assert cli("agent", "init", env=validator_env).returncode == 0
    replay = cli("replay", "--job", job, "--gateway", server.base, env=validator_env)
    assert replay.returncode == 0, replay.stderr
    assert replay.stdout.count(": pass [exact]") == 2, replay.stdout
    again = cli("replay", "--job", job, "--gateway", server.base, env=validator_env)
    assert "nothing ready to replay" in again.stdout
    report = market.training(job)
    assert all(a["outcome"] == "pass" for a in report["audits"])
    market.close()
    db.dispose()


def _daemon_parts(env, server, monkeypatch):  # noqa: ANN001, ANN202
    """A registered cpu-reference provider's settings and key, for a Daemon run in this process."""
    assert cli("agent", "init", "--gateway", server.base, env=env).returncode == 0
    assert cli("agent", "register", "--gpu", "cpu-reference", "--name", "box", env=env).returncode == 0
    monkeypatch.setenv("GPUPROOF_CONFIG_DIR", env["GPUPROOF_CONFIG_DIR"])
    from agent import keys
    from agent.cli import _agent_settings

    settings = _agent_settings()
    return settings, keys.load(settings.resolved_key_path())


def test_a_device_that_fails_mid_challenge_is_reported_and_the_agent_keeps_serving(env, server, monkeypatch,
                                                                                    capfd):
    from agent.cli import _client
    from agent.daemon import Daemon
    from kernels.reference import CpuBackend

    settings, key = _daemon_parts(env, server, monkeypatch)

    class FailsOnce(CpuBackend):  # a GPU that runs out of memory on its first challenge, then recovers
        failed = False

        def run(self, params, progress=None):  # noqa: ANN001, ANN201
            if not FailsOnce.failed:
                FailsOnce.failed = True
                raise RuntimeError("CUDA error: out of memory (cudaErrorMemoryAllocation)")
            return super().run(params, progress)

    monkeypatch.setattr("agent.daemon.DEVICE_ERROR_WAIT_S", 0.2)
    events: list[dict] = []
    with _client(settings.gateway, key) as client:
        Daemon(client, settings.devices, lambda spec: FailsOnce(), poll_max_s=1.0, max_challenges=2,
               emit=events.append).run()
    errors = [e for e in events if e["event"] == "device-error"]
    assert [e["error"] for e in errors] == ["RuntimeError: CUDA error: out of memory (cudaErrorMemoryAllocation)"]
    assert len([e for e in events if e["event"] == "verdict"]) >= 2  # it went on answering
    assert "Traceback" not in capfd.readouterr().err


def test_a_device_that_cannot_start_is_reported_without_a_traceback(env, server, monkeypatch, capfd):
    from agent.cli import _client
    from agent.daemon import Daemon
    from kernels.errors import BackendUnavailable

    settings, key = _daemon_parts(env, server, monkeypatch)

    def no_gpu(spec):  # noqa: ANN001, ANN202
        raise BackendUnavailable("--device 0: this machine has 0 CUDA device(s)")

    events: list[dict] = []
    with _client(settings.gateway, key) as client:
        Daemon(client, settings.devices, no_gpu, poll_max_s=1.0, emit=events.append).run()
    assert [e["event"] for e in events] == ["device-unavailable", "stopped"]
    assert "this machine has 0 CUDA device(s)" in events[0]["error"]
    assert "Traceback" not in capfd.readouterr().err


def test_the_agent_answers_through_the_cuda_backend(env, server, monkeypatch, capfd):
    """The provider's real path on a GPU (CudaBackend.run and .open) against the gateway, with CuPy's CPU
    stand-in under it (tests/support/cupy_on_cpu.py): every answer must pass."""
    from tests.support import cuda_emu, cupy_on_cpu

    if cuda_emu.compiler_reason():
        pytest.skip(cuda_emu.compiler_reason())
    from agent.cli import _client
    from agent.daemon import Daemon

    settings, key = _daemon_parts(env, server, monkeypatch)
    events: list[dict] = []
    used: list[str] = []

    def backend_for(spec):  # noqa: ANN001, ANN202
        from kernels.backend import select_backend

        backend = select_backend("auto", spec.cuda_index)
        used.append(backend.name)
        return backend

    with cupy_on_cpu.installed(monkeypatch), _client(settings.gateway, key) as client:
        Daemon(client, settings.devices, backend_for, poll_max_s=1.0, max_challenges=2, emit=events.append).run()
    assert used == ["cuda"]
    verdicts = [e for e in events if e["event"] == "verdict"]
    assert len(verdicts) >= 2 and all(v["outcome"] == "pass" for v in verdicts), events
    assert "Traceback" not in capfd.readouterr().err
