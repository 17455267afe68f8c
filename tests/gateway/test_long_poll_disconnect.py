"""A long poll whose agent has gone issues no round (the demo's honest provider was held: a poll left open by
its stopped agent issued a round nobody would answer, in progress when the job was settled)."""

from __future__ import annotations

import contextlib
import time

import httpx
from gpuproof.client import GatewayClient
from gpuproof.gateway.models import Device
from gpuproof.verifier import signatures
from sqlalchemy import create_engine, update

from tests.gateway.test_http import servers, signed_post  # noqa: F401 (fixture)


def test_a_long_poll_whose_agent_disconnected_issues_no_round(servers):  # noqa: F811
    server = servers()
    key = signatures.new_private_key()
    engine = create_engine(server.env["GPUPROOF_DATABASE_URL"])
    try:
        with GatewayClient(server.base, key=key) as client:
            client.register("leaver", [{"model": "cpu-reference", "vram_gib": 4}])
            assert client.poll(0).challenge is not None  # the first round, at once after registering
            pid = client.provider_id
        with engine.begin() as conn:
            conn.exec_driver_sql("UPDATE challenges SET state = 'judged'")
        # an agent that waits 1 s of its 10 s poll, then leaves (its connection closed)
        with httpx.Client(base_url=server.base, timeout=1.0) as gone, contextlib.suppress(httpx.ReadTimeout):
            signed_post(gone, key, pid, f"/v1/providers/{pid}/challenges", {"device": 0, "wait_s": 10})
        with engine.begin() as conn:
            conn.execute(update(Device).values(next_due_at=time.time() + 0.5))  # the round falls due in 0.5 s
        time.sleep(3.0)  # the abandoned poll rechecks at least once a second
        with engine.begin() as conn:
            issued = conn.exec_driver_sql("SELECT count(*) FROM challenges").scalar_one()
        assert issued == 1, "a round was issued to a poll nobody holds"
        with GatewayClient(server.base, key=key, provider_id=pid) as client:
            assert client.poll(0).challenge is not None  # the round is still due: the next poll gets it
    finally:
        engine.dispose()
