"""Spec v2's memory phase end to end (issue 17 part 3): the agent, on the CPU reference, answers a v2 challenge
for a profiled card through the HTTP gateway (uvicorn on loopback): roots, the walk from the gateway's nonce
timed on the gateway's clock, the drawn lanes opened with the rows; the verdict carries the memory finding
and the trust's verified class is the card's."""

from __future__ import annotations

import json

from gpuproof.verifier import transcript
from gpuproof.verifier.profiles import load_profiles_with
from gpuproof.verifier.protocol import Verifier

from tests.agent.test_agent import cli, env  # noqa: F401 (fixture)
from tests.support.calibrate import scaled
from tests.support.memory_card import profile_toml
from tests.support.server import Server

SHAPE = (16, 256, 64, 3)


def test_an_honest_agent_passes_a_v2_challenge_with_its_memory_phase(env, tmp_path):  # noqa: F811
    profiles = tmp_path / "profiles.toml"
    profiles.write_text(profile_toml(scaled(2.0)))  # the walk's honest budget, scaled to this machine
    server = Server(f"sqlite:///{tmp_path / 'gw.db'}", tmp_path / "gw", GPUPROOF_CHALLENGE_INTERVAL_S="0",
                    GPUPROOF_VERIFY_TEST_SHAPE=",".join(map(str, SHAPE)),
                    GPUPROOF_PROFILES_FILE=str(profiles)).start()
    try:
        assert cli("agent", "init", "--gateway", server.base, env=env).returncode == 0
        reg = cli("agent", "register", "--gpu", "test-card", "--name", "box", env=env)
        assert reg.returncode == 0, reg.stderr
        run = cli("agent", "run", "--backend", "cpu", "--max-challenges", "2", env=env)
        assert run.returncode == 0, run.stderr
        events = [json.loads(line) for line in run.stdout.splitlines()]
        verdicts = [e for e in events if e["event"] == "verdict"]
        assert len(verdicts) >= 2 and all(v["outcome"] == "pass" for v in verdicts), events
        pid = cli("agent", "whoami", env=env).stdout.strip()
        import httpx

        page = httpx.get(f"{server.base}/v1/providers/{pid}/verdicts").json()
        for item in page["items"]:
            memory = item["verdict"]["memory"]
            assert memory["passed"] and memory["capacity"] == "holds-table" and memory["walk_s"] >= 0
            assert any(r.startswith("memory phase passed") for r in item["verdict"]["reasons"])
            doc = httpx.get(f"{server.base}/v1/challenges/{item['challenge_id']}/transcript").json()
            assert len(doc["memory"]["lane_openings"]) == doc["memory"]["plan"]["opened"]
            _, diffs = transcript.recheck(doc, Verifier(profiles=load_profiles_with(profiles)))
            assert diffs == []
        trust = httpx.get(f"{server.base}/v1/providers/{pid}/trust").json()
        assert trust["verified_class"] == "test-card"
    finally:
        server.stop()
