"""The provider agent as a user runs it, against a real gateway on loopback (uvicorn subprocess)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from gpuproof.gateway.models import Challenge, LogEntry
from sqlalchemy import create_engine, func, select

from tests.support.server import ROOT, Server


def cli(*args: str, env: dict, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gpuproof", *args], capture_output=True, text=True, env=env,
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


def test_a_second_registration_points_to_update_which_changes_it(env, server):
    import httpx

    assert cli("agent", "init", "--gateway", server.base, env=env).returncode == 0
    assert cli("agent", "register", "--gpu", "cpu-reference", "--name", "box", env=env).returncode == 0
    one_line_error(cli("agent", "register", "--gpu", "cpu-reference", "--name", "box", env=env), 1,
                   "`gpuproof agent register --update`")
    update = cli("agent", "register", "--update", "--gpu", "cpu-reference", "--count", "2", "--name", "bigger box",
                 env=env)
    assert update.returncode == 0 and "updated provider" in update.stdout and "(bigger box)" in update.stdout
    pid = cli("agent", "whoami", env=env).stdout.strip()
    info = httpx.get(f"{server.base}/v1/providers/{pid}").json()
    assert info["name"] == "bigger box" and [d["count"] for d in info["devices"]] == [1, 1]  # two cards, two devices


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
    agent = subprocess.Popen([sys.executable, "-m", "gpuproof", "agent", "run"],
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
    from gpuproof.client import GatewayClient
    from gpuproof.gateway import admin
    from gpuproof.gateway.db import Database

    assert cli("agent", "init", "--gateway", server.base, env=env).returncode == 0
    assert cli("agent", "register", "--gpu", "cpu-reference", env=env).returncode == 0
    pid = cli("agent", "whoami", env=env).stdout.strip()
    db = Database(f"sqlite:///{tmp_path / 'gw.db'}")
    market = GatewayClient(server.base, admin.create_api_key(db, "market", ["jobs", "settle"]))
    replay_key = admin.create_api_key(db, "validator", ["replay"])
    policy = {"interval": 5, "segments": 2, "chunks": 4, "workload": {"name": "mlp", "params": {"hidden": 16}}}
    validator_env = dict(env, GPUPROOF_CONFIG_DIR=str(tmp_path / "validator"), GPUPROOF_API_KEY=replay_key)
    assert cli("agent", "init", env=validator_env).returncode == 0  # the market names its key for the job
    market.register_validator(cli("agent", "whoami", "--public-key", env=validator_env).stdout.strip(), "v")
    job = market.create_job("renter", pid, "usd:1", policy).id
    train = cli("agent", "train", "--job", job, "--steps", "20", "--store", str(tmp_path / "ckpt"), env=env)
    assert train.returncode == 0, train.stderr
    assert "5 commitments" in train.stdout and train.stdout.count("evidence sent") == 2, train.stdout
    one_line_error(cli("replay", "--job", job, "--gateway", server.base, env=env), 2, "--api-key")
    one_line_error(cli("replay", "--job", "nope", "--gateway", server.base, env=env), 2, "--job")
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
    from gpuproof.agent import keys
    from gpuproof.cli.common import agent_settings

    settings = agent_settings()
    return settings, keys.load(settings.resolved_key_path())


def test_a_stop_that_comes_with_a_challenge_waits_for_its_answer(env, server, monkeypatch):
    """A stop (SIGTERM) arriving just as a poll brought a challenge, while the agent echoes its round-trip
    probe: the agent answers that challenge before it exits. Leaving it would make it a missed challenge,
    which holds the provider's payment (the demo's honest box was held so once in CI)."""
    from gpuproof.agent.daemon import Daemon
    from gpuproof.cli.common import gateway_client
    from gpuproof.kernels.reference import CpuBackend

    settings, key = _daemon_parts(env, server, monkeypatch)
    events: list[dict] = []
    with gateway_client(settings.gateway, key) as client:
        daemon = Daemon(client, settings.devices, lambda spec: CpuBackend(), poll_max_s=1.0, emit=events.append)
        poll, echo = client.poll, client.echo_rtt
        got: list[object] = []

        def polled(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            answer = poll(*args, **kwargs)
            got.append(answer.challenge)
            return answer

        def echoed(probe):  # noqa: ANN001, ANN202
            answer = echo(probe)
            if got[-1] is not None:  # the stop comes while the challenge is held, before it is proved
                daemon.stop.set()
                time.sleep(1.0)  # the echo's answer is slow to come: the daemon sees the stop meanwhile
            return answer

        monkeypatch.setattr(client, "poll", polled)
        monkeypatch.setattr(client, "echo_rtt", echoed)
        daemon.run()
    kinds = [e["event"] for e in events]
    assert kinds.count("challenge") == 1 and kinds.count("verdict") == 1, kinds
    verdict = next(e for e in events if e["event"] == "verdict")
    assert verdict["timing"] != "timeout", verdict  # answered in time (the echo's delay may make it slow)
    assert kinds[-1] == "stopped"


def test_the_rtt_echo_is_not_on_the_timed_path_proving_starts_at_once(env, server, monkeypatch):
    """The round-trip probe's echo runs beside the proving: with an echo whose round trip never ends
    before the commitment is sent, the agent still commits. An agent that echoed before proving (as it
    did) waited out the echo first, which charged an honest provider one more round trip."""
    import threading

    from gpuproof.agent.daemon import Daemon
    from gpuproof.cli.common import gateway_client
    from gpuproof.kernels.reference import CpuBackend

    settings, key = _daemon_parts(env, server, monkeypatch)
    events: list[dict] = []
    committed = threading.Event()
    echoes: list[bool] = []  # per echo: had the commitment been sent by the time the echo returned?
    with gateway_client(settings.gateway, key) as client:
        daemon = Daemon(client, settings.devices, lambda spec: CpuBackend(), poll_max_s=1.0, max_challenges=1,
                        emit=events.append)
        echo, commit = client.echo_rtt, client.commit

        def slow_echo(probe):  # noqa: ANN001, ANN202
            echoes.append(committed.wait(timeout=5.0))  # a round trip that lasts until the commitment
            return echo(probe)

        def commit_seen(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            committed.set()
            return commit(*args, **kwargs)

        monkeypatch.setattr(client, "echo_rtt", slow_echo)
        monkeypatch.setattr(client, "commit", commit_seen)
        daemon.run()
    kinds = [e["event"] for e in events]
    assert kinds.count("verdict") == 1, kinds
    assert echoes and echoes[0], "the agent waited for the echo before it proved and committed"


def test_a_device_that_fails_mid_challenge_is_reported_and_the_agent_keeps_serving(env, server, monkeypatch,
                                                                                    capfd):
    from gpuproof.agent.daemon import Daemon
    from gpuproof.cli.common import gateway_client
    from gpuproof.kernels.reference import CpuBackend

    settings, key = _daemon_parts(env, server, monkeypatch)

    class FailsOnce(CpuBackend):  # a GPU that runs out of memory on its first challenge, then recovers
        failed = False

        def run(self, params, progress=None):  # noqa: ANN001, ANN201
            if not FailsOnce.failed:
                FailsOnce.failed = True
                raise RuntimeError("CUDA error: out of memory (cudaErrorMemoryAllocation)")
            return super().run(params, progress)

    monkeypatch.setattr("gpuproof.agent.daemon.DEVICE_ERROR_WAIT_S", 0.2)
    events: list[dict] = []
    with gateway_client(settings.gateway, key) as client:
        Daemon(client, settings.devices, lambda spec: FailsOnce(), poll_max_s=1.0, max_challenges=2,
               emit=events.append).run()
    errors = [e for e in events if e["event"] == "device-error"]
    assert [e["error"] for e in errors] == ["RuntimeError: CUDA error: out of memory (cudaErrorMemoryAllocation)"]
    assert len([e for e in events if e["event"] == "verdict"]) >= 2  # it went on answering
    assert "Traceback" not in capfd.readouterr().err


def test_an_idle_agent_says_how_often_challenges_come_but_never_when(env, tmp_path, monkeypatch):
    """The verifier's rounds are unannounced: an idle agent listens (a long poll) and shows the mean interval,
    announced once (event `idle`), not on each poll."""
    import threading

    from gpuproof.agent.daemon import Daemon, interval_text
    from gpuproof.cli.common import gateway_client
    from gpuproof.kernels.reference import CpuBackend

    hourly = Server(f"sqlite:///{tmp_path / 'hourly.db'}", tmp_path / "hourly", GPUPROOF_CHALLENGE_INTERVAL_S="3600",
                    GPUPROOF_VERIFY_TEST_SHAPE="16,256,64,3", GPUPROOF_LONG_POLL_MAX_S="1").start()
    try:
        settings, key = _daemon_parts(env, hourly, monkeypatch)
        events: list[dict] = []
        with gateway_client(settings.gateway, key) as client:
            daemon = Daemon(client, settings.devices, lambda spec: CpuBackend(), poll_max_s=0.5, emit=events.append)
            runner = threading.Thread(target=daemon.run)
            runner.start()
            deadline = time.monotonic() + 60
            while not any(e["event"] == "idle" for e in events) and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(3)  # several more (short) long polls
            state = daemon.status[0].describe_state(time.time())
            daemon.stop.set()
            runner.join(timeout=30)
    finally:
        hourly.stop()
    kinds = [e["event"] for e in events]
    assert [k for k in kinds if k in ("challenge", "verdict", "idle")] == ["challenge", "verdict", "idle"], kinds
    idle = next(e for e in events if e["event"] == "idle")
    assert idle["mean_interval_s"] == 3600 and idle["device"] == 0 and "due_in_s" not in idle
    assert state == "idle: listening; challenges come unannounced, about every 1 h 00 min", state
    assert [interval_text(s) for s in (40, 600, 3900)] == ["about every 40 s", "about every 10 min",
                                                            "about every 1 h 05 min"]


def test_a_device_that_cannot_start_is_reported_without_a_traceback(env, server, monkeypatch, capfd):
    from gpuproof.agent.daemon import Daemon
    from gpuproof.cli.common import gateway_client
    from gpuproof.kernels.errors import BackendUnavailable

    settings, key = _daemon_parts(env, server, monkeypatch)

    def no_gpu(spec):  # noqa: ANN001, ANN202
        raise BackendUnavailable("--device 0: this machine has 0 CUDA device(s)")

    events: list[dict] = []
    with gateway_client(settings.gateway, key) as client:
        Daemon(client, settings.devices, no_gpu, poll_max_s=1.0, emit=events.append).run()
    assert [e["event"] for e in events] == ["device-unavailable", "stopped"]
    assert "this machine has 0 CUDA device(s)" in events[0]["error"]
    assert "Traceback" not in capfd.readouterr().err


def stand_in_rounds(monkeypatch, m: int, n: int, k: int) -> int:  # noqa: ANN001
    """How many rounds of (m, n, k) the CUDA backend over CuPy's CPU stand-in answers, on this machine as
    loaded now, in a quarter of the cpu-reference slow limit (1 to 4): a calibration, not a constant.

    The stand-in runs every CUDA thread as an OS thread, so one emulated round takes 35 ms on a quiet
    2-core machine and several times that beside other work, while the limit of a small challenge is
    about 0.35 s; four rounds, as the other agent tests ask, failed as slower-than-claimed under load.
    """
    import secrets
    import statistics

    from gpuproof.kernels.spec import ChallengeParams
    from gpuproof.verifier.protocol import Verifier

    from tests.support import cupy_on_cpu

    with cupy_on_cpu.installed(monkeypatch):
        from gpuproof.kernels.cuda_backend import CudaBackend

        backend = CudaBackend(0)
        backend.warm_up([(m, n, k)])
        times = []
        for _ in range(5):
            started = time.perf_counter()
            backend.run(ChallengeParams(secrets.token_bytes(32), m, n, k, 1))
            times.append(time.perf_counter() - started)
    one_round = statistics.median(times)
    limit = Verifier().issue("cpu-reference", now=0.0, shape=(m, n, k, 1)).thresholds.slow_s
    return max(1, min(4, int(limit / 4 / one_round)))


def test_the_agent_answers_through_the_cuda_backend(env, monkeypatch, capfd, tmp_path):
    """The provider's real path on a GPU (CudaBackend.run and .open) against the gateway, with CuPy's CPU
    stand-in under it (tests/support/cupy_on_cpu.py): every answer must pass, timed against the
    cpu-reference limits, with as many rounds as the stand-in fits into them on this machine. The agent
    warms the backend up first, so no answer pays the stand-in's one-time costs."""
    from tests.support import cuda_emu, cupy_on_cpu

    if cuda_emu.compiler_reason():
        pytest.skip(cuda_emu.compiler_reason())
    from gpuproof.agent.daemon import Daemon
    from gpuproof.cli.common import gateway_client

    m, n, k = 64, 512, 256
    rounds = stand_in_rounds(monkeypatch, m, n, k)
    server = Server(f"sqlite:///{tmp_path / 'gw.db'}", tmp_path / "gw", GPUPROOF_CHALLENGE_INTERVAL_S="0",
                    GPUPROOF_VERIFY_TEST_SHAPE=f"{m},{n},{k},{rounds}").start()
    events: list[dict] = []
    used: list[str] = []

    def backend_for(spec):  # noqa: ANN001, ANN202
        from gpuproof.kernels.backend import select_backend

        backend = select_backend("auto", spec.cuda_index)
        used.append(backend.name)
        return backend

    try:
        settings, key = _daemon_parts(env, server, monkeypatch)
        with cupy_on_cpu.installed(monkeypatch), gateway_client(settings.gateway, key) as client:
            Daemon(client, settings.devices, backend_for, poll_max_s=1.0, max_challenges=2,
                   emit=events.append).run()
    finally:
        server.stop()
    assert used == ["cuda"]
    verdicts = [e for e in events if e["event"] == "verdict"]
    assert len(verdicts) >= 2 and all(v["outcome"] == "pass" for v in verdicts), \
        (rounds, [(v["outcome"], v["timing"], v["prove_seconds"], v["measured_s"]) for v in verdicts])
    kinds = [e["event"] for e in events]
    assert kinds.index("warmed-up") < kinds.index("challenge"), kinds
    assert "Traceback" not in capfd.readouterr().err
