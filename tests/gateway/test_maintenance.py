"""The gateway's own sweep (gateway/maintenance.py): overdue challenges judged without the provider,
request nonces deleted only once no replay of theirs can pass, and the sweep running on its own."""

from __future__ import annotations

import json
import time

from gpuproof.client import signed_headers
from gpuproof.gateway import auth, maintenance, metrics, service
from gpuproof.gateway.models import Challenge, Device, RequestNonce, RttProbe
from sqlalchemy import func, select

from tests.gateway.test_api import Agent, assert_problem, db_counts
from tests.support.calibrate import scaled


def overdue(gateway, challenge_id: str) -> None:
    with gateway.app.state.gp.db.writer() as s:
        row = s.get(Challenge, challenge_id)
        row.issued_at -= row.deadline_s + service.EXPIRY_GRACE_S + 5
        s.commit()


def test_a_silent_providers_overdue_challenge_is_judged_by_the_sweep(gateway):
    silent, busy = Agent(gateway, "silent"), Agent(gateway, "busy")
    gone = silent.next().json()  # taken, never answered, and the provider never polls again
    working = busy.next().json()  # still within its deadline
    overdue(gateway, gone["challenge_id"])
    state = gateway.app.state.gp
    assert maintenance.sweep(state, time.time()).timeouts == 1
    verdicts = gateway.client.get(f"/v1/providers/{silent.id}/verdicts").json()["items"]
    assert [(v["challenge_id"], v["verdict"]["timing"]) for v in verdicts] == [(gone["challenge_id"], "timeout")]
    assert gateway.client.get(f"/v1/providers/{silent.id}/trust").json()["evidence"] == 1  # the cache was dropped
    with state.db.reader() as s:
        assert s.get(Challenge, working["challenge_id"]).state == "issued"
    assert maintenance.sweep(state, time.time()).timeouts == 0  # judged once
    entries = gateway.client.get("/v1/log/entries").json()["entries"]
    assert [json.loads(e["entry"])["challenge_id"] for e in entries if e["kind"] == "verdict"] == [gone["challenge_id"]]


def test_a_challenge_is_left_alone_for_a_grace_after_its_deadline(gateway):
    """Openings that arrived in time may still be queued or under verification just after the deadline:
    neither the sweep nor another device's poll judges the challenge a timeout until the grace has
    passed. The device's own next poll does (it has given up on it) and gets a new challenge."""
    agent = Agent(gateway, devices=2)
    c = agent.next(device=0).json()
    with gateway.app.state.gp.db.writer() as s:
        row = s.get(Challenge, c["challenge_id"])
        row.issued_at -= row.deadline_s + service.EXPIRY_GRACE_S - 5  # past the deadline, inside the grace
        s.commit()
    assert maintenance.sweep(gateway.app.state.gp, time.time()).timeouts == 0
    other = agent.next(device=1).json()  # the provider's other device
    with gateway.app.state.gp.db.reader() as s:
        assert s.get(Challenge, c["challenge_id"]).state == "issued"
    with gateway.app.state.gp.db.writer() as s:
        s.get(Challenge, c["challenge_id"]).issued_at -= 10
        s.commit()
    assert maintenance.sweep(gateway.app.state.gp, time.time()).timeouts == 1
    # inside the grace, the device's own poll judges its dead challenge and it gets a new one
    with gateway.app.state.gp.db.writer() as s:
        row = s.get(Challenge, other["challenge_id"])
        row.issued_at -= row.deadline_s + 1
        s.execute(Device.__table__.update().values(next_due_at=0))  # due again
        s.commit()
    fresh = agent.next(device=1).json()
    assert fresh["challenge_id"] != other["challenge_id"]
    with gateway.app.state.gp.db.reader() as s:
        assert s.get(Challenge, other["challenge_id"]).verdict["timing"] == "timeout"


def test_nonces_are_deleted_only_when_their_request_can_no_longer_be_replayed(gateway, monkeypatch):
    """The worst case: a request signed as far in the future as the window allows. A replay passes the
    timestamp check until 2 x window after the nonce was stored; the sweep must keep it that long."""
    agent = Agent(gateway)
    state = gateway.app.state.gp
    window = state.settings.timestamp_window_s
    retention = maintenance.nonce_retention_s(window)
    stored_at = int(time.time())
    path = f"/v1/providers/{agent.id}/challenges"
    body = json.dumps({"device": 0}).encode()
    headers = signed_headers(agent.key, agent.id, "POST", path, body, audience=gateway.audience,
                             timestamp=stored_at + int(window) - 1)
    monkeypatch.setattr(auth, "wall_clock", lambda: stored_at)
    assert gateway.client.post(path, content=body, headers=headers).status_code == 201
    # the last second at which the replay's timestamp is still inside the window: only the nonce refuses it
    last = stored_at + 2 * int(window) - 1
    monkeypatch.setattr(auth, "wall_clock", lambda: last)
    assert maintenance.sweep(state, last).nonces == 0
    before = db_counts(gateway)
    assert_problem(gateway.client.post(path, content=body, headers=headers), 409, "already used")
    # once the retention has passed the nonce is deleted, and the same request is refused for its timestamp
    later = stored_at + retention + 1
    monkeypatch.setattr(auth, "wall_clock", lambda: later)
    assert maintenance.sweep(state, later).nonces >= 1
    with state.db.reader() as s:
        assert s.execute(select(func.count()).select_from(RequestNonce)
                         .where(RequestNonce.nonce == headers["X-Gpuproof-Nonce"])).scalar_one() == 0
    assert_problem(gateway.client.post(path, content=body, headers=headers), 401, "from the gateway's clock")
    after = db_counts(gateway)
    assert (after[0], after[2]) == (before[0], before[2])  # no challenge issued, nothing logged


def test_the_sweep_runs_on_its_own(database_url, tmp_path):
    from fastapi.testclient import TestClient
    from gpuproof.gateway.app import create_app
    from gpuproof.gateway.settings import Settings

    from tests.gateway.conftest import Gateway

    settings = Settings(data_dir=tmp_path / "d", database_url=database_url, verify_test_shape="16,256,64,3",
                        maintenance_interval_s=0.05)
    app = create_app(settings)
    swept_before = metrics.REGISTRY.get_sample_value("gpuproof_swept_total", {"what": "timeouts"}) or 0.0
    with TestClient(app) as client:
        gw = Gateway(client, settings, app)
        agent = Agent(gw)
        c = agent.next().json()
        overdue(gw, c["challenge_id"])
        deadline = time.monotonic() + scaled(10)
        while time.monotonic() < deadline:  # nobody polls or settles: the sweep judges it
            with app.state.gp.db.reader() as s:
                if s.get(Challenge, c["challenge_id"]).state == "judged":
                    break
            time.sleep(0.05)
        with app.state.gp.db.reader() as s:
            assert s.get(Challenge, c["challenge_id"]).outcome == "fail"
        assert f'gpuproof_swept_total{{what="timeouts"}} {swept_before + 1}' in client.get("/metrics").text


def test_round_trip_probes_older_than_their_use_are_deleted(gateway):
    agent = Agent(gateway)
    for _ in range(3):
        agent.next()  # every poll answer carries a probe
    state = gateway.app.state.gp
    with state.db.writer() as s:
        probes = s.execute(select(RttProbe).order_by(RttProbe.sent_at)).scalars().all()
        assert len(probes) == 3
        probes[0].sent_at -= service.RTT_HISTORY_S + 1  # outside the hour rtt_allowance reads
        old, kept = probes[0].token, {p.token for p in probes[1:]}
        s.commit()
    assert maintenance.sweep(state, time.time()).probes == 1
    with state.db.reader() as s:
        assert set(s.execute(select(RttProbe.token)).scalars()) == kept and old not in kept


def test_a_sweep_on_a_database_not_yet_migrated_logs_one_line_and_keeps_going(tmp_path, caplog):
    import logging

    from fastapi.testclient import TestClient
    from gpuproof.gateway.app import create_app
    from gpuproof.gateway.settings import Settings

    settings = Settings(data_dir=tmp_path / "d", maintenance_interval_s=0.05)
    caplog.set_level(logging.ERROR, logger="gpuproof.gateway")
    with TestClient(create_app(settings, run_migrations=False)) as client:
        deadline = time.monotonic() + scaled(10)
        while len([r for r in caplog.records if "maintenance sweep failed" in r.getMessage()]) < 2:
            assert time.monotonic() < deadline, "the sweep did not run twice"
            time.sleep(0.05)
        assert client.get("/healthz").status_code == 200  # still serving
    failures = [r for r in caplog.records if "maintenance sweep failed" in r.getMessage()]
    assert all("OperationalError" in r.getMessage() and r.exc_info is None for r in failures), failures[0].getMessage()


def test_partial_uploads_left_by_a_dead_process_are_deleted(gateway):
    import os

    incoming = gateway.settings.data_dir / "uploads" / ".incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    stale, live = incoming / "a.part", incoming / "b.part"
    for part in (stale, live):
        part.write_bytes(b"x" * 100)
    hour_ago = time.time() - maintenance.STALE_UPLOAD_S - 1
    os.utime(stale, (hour_ago, hour_ago))
    assert maintenance.sweep(gateway.app.state.gp, time.time()).partial_uploads == 1
    assert not stale.exists() and live.exists()
