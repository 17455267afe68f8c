"""Verifier-scheduled rounds (issue 16): every device of a provider is challenged at the same instant, the
agent hears of it through a long poll, and one card registered as several devices fails all but one."""

from __future__ import annotations

import statistics
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient
from gpuproof.client import GatewayClient
from gpuproof.gateway.app import create_app
from gpuproof.gateway.models import Device
from gpuproof.gateway.settings import Settings
from gpuproof.kernels.reference import CpuBackend
from gpuproof.kernels.spec import ChallengeParams
from gpuproof.verifier import signatures
from gpuproof.verifier.profiles import Profile, load_profiles
from gpuproof.verifier.protocol import Verifier, VerifierConfig
from gpuproof.verifier.schedule import SchedulePolicy, missed_start, next_round_at, sooner_for_a_job
from gpuproof.verifier.wire import ChallengeOut
from sqlalchemy import create_engine, update

from tests.gateway.test_http import servers  # noqa: F401 (fixture)
from tests.gateway.test_paid_hardware import Provider
from tests.support import honest


def test_rounds_are_a_shifted_poisson_process_with_a_job_rate():
    policy = SchedulePolicy(mean_interval_s=3600, job_mean_interval_s=600)
    assert next_round_at(100.0, False, policy, lambda: 0.0) == 100.0 + 360  # the minimum gap, a tenth
    draws = [next_round_at(0.0, False, policy) for _ in range(4000)]
    assert min(draws) >= 360 and statistics.fmean(draws) == pytest.approx(3600, rel=0.08)
    job = [next_round_at(0.0, True, policy) for _ in range(4000)]
    assert min(job) >= 60 and statistics.fmean(job) == pytest.approx(600, rel=0.08)
    assert sooner_for_a_job(5000.0, 0.0, policy, lambda: 0.5) == pytest.approx(600 * 0.6931, rel=1e-3)
    assert sooner_for_a_job(10.0, 0.0, policy, lambda: 0.5) == 10.0
    assert missed_start(0.0, None, 5.1, policy) and not missed_start(0.0, 0.2, 99, policy)
    assert not missed_start(0.0, None, 4.9, policy)


TARGET_S = 1.0


def _rate(shape: tuple[int, int, int, int], runs: int = 3) -> float:
    """This machine's best rate now (ops/s) on a challenge of `shape` with the CPU backend: the fastest of
    `runs` (the strictest class this machine can claim: a busier moment only makes a cheat slower)."""
    backend = CpuBackend()
    times = []
    for i in range(runs):
        params = ChallengeParams(bytes([i]) * 32, *shape)
        started = time.perf_counter()
        backend.run(params)
        times.append(time.perf_counter() - started)
    m, n, k, r = shape
    return 2.0 * m * n * k * r / min(times)


ATTEMPTS = 3  # rounds played until one ran at the speed its class was calibrated at


def test_one_box_registered_as_four_devices_passes_at_most_one_of_a_round(database_url, tmp_path):
    """One process with one CPU registers 4 devices of a class calibrated on this machine (a narrow band, as
    measured profiles have: the slowest honest card at 0.95 of the rate measured just before). A round
    challenges all four at the same instant; the box computes them one after another. Each is sized so
    that one card needs ~TARGET_S (well past the thresholds' fixed allowances of ~0.4 s): the first is in
    time, the others come 2x, 3x, 4x later and are slower than any honest card of the class (or past
    their deadline).

    The class stands for "this box at its best": a round whose challenges ran much faster than the
    calibration did (a busy machine calibrated, a quiet one answered: seen once under two CPU burners,
    0.53 s against a 1 s class) does not test that, and is played again, calibrated afresh, up to ATTEMPTS
    times; the last one is judged whatever it saw."""
    for attempt in range(ATTEMPTS):
        verdicts, compute_s, class_s = _one_box_round(database_url, tmp_path / f"attempt-{attempt}")
        if min(compute_s) >= 0.8 * class_s:
            break
        print(f"attempt {attempt}: the box ran at {min(compute_s):.2f} s a challenge against its class's "
              f"{class_s:.2f} s: calibrated again")
    passed = [v["outcome"] == "pass" for v in verdicts]
    assert all(v["correctness"] == "pass" for v in verdicts), verdicts  # every row right: only time gives it away
    assert sum(passed) <= 1, [(v["timing"], v["measured_s"]) for v in verdicts]
    assert all(v["timing"] == "slower-than-claimed" for v in verdicts[1:]), [v["reasons"] for v in verdicts]
    print(f"one box as 4 devices: {[(v['timing'], round(v['measured_s'], 2)) for v in verdicts]}")


def _one_box_round(database_url: str, data_dir) -> tuple[list[dict], list[float], float]:  # noqa: ANN001
    """One round on a fresh gateway: (the four verdicts, each challenge's compute time on the box, the
    calibrated class's time for one challenge)."""
    per_round = 2.0 * 128 * 1024 * 1024
    rounds = max(1, round(TARGET_S * _rate((128, 1024, 1024, 4), runs=2) / per_round))
    rounds = max(1, round(TARGET_S * _rate((128, 1024, 1024, rounds), runs=2) / per_round))  # fixed costs too
    shape = (128, 1024, 1024, rounds)
    rate = _rate(shape, runs=3)  # the class: this machine at its best now, on exactly the challenge it answers
    calibrated = Profile(key="cpu-calibrated", name="this CPU, calibrated", int8_tops=rate / 1e12,
                         memory_gib=4, bandwidth_gbs=10, eff_low=0.95, eff_high=1.6, measured=True, arch="cpu")
    settings = Settings(data_dir=data_dir, database_url=database_url, challenge_interval_s=3600,
                        verify_test_shape="16,256,64,3;cpu-calibrated=" + ",".join(map(str, shape)),
                        provider_rate_per_s=1000, ip_rate_per_s=10000, maintenance_interval_s=0)
    app = create_app(settings)
    app.state.gp.verifier = Verifier(VerifierConfig(spot_checks=settings.spot_checks),
                                     profiles={**load_profiles(), "cpu-calibrated": calibrated})
    compute_s: list[float] = []
    with TestClient(app) as client:
        class Gw:
            pass
        gw = Gw()
        gw.client, gw.app = client, app  # type: ignore[attr-defined]
        box = Provider(gw, ["cpu-calibrated"] * 4)
        box.due_now()
        challenges = [box.post(f"/v1/providers/{box.id}/challenges", {"device": d}).json() for d in range(4)]
        assert len({c["issued_at"] for c in challenges}) == 1 and len({c["seed"] for c in challenges}) == 4
        committed = []
        for c in challenges:  # one card: each computed and committed in turn
            params = ChallengeParams.from_json(c)
            started = time.perf_counter()
            roots = CpuBackend().run(params)
            compute_s.append(time.perf_counter() - started)
            r = box.post(f"/v1/challenges/{c['challenge_id']}/commitment", {"roots": [x.hex() for x in roots]})
            assert r.status_code in (200, 409), r.text  # 409: past its deadline, refused
            committed.append((params, roots, r.json().get("pairs")))
        verdicts = []
        for c, (params, roots, pairs) in zip(challenges, committed, strict=True):
            if pairs is None:
                verdicts.append({"outcome": "fail", "correctness": "pass", "timing": "slower-than-claimed",
                                 "measured_s": float("inf"), "reasons": ["refused: past its deadline"]})
                continue
            answer = box.post(f"/v1/challenges/{c['challenge_id']}/openings",
                              {"openings": honest.openings(params, roots, pairs)})
            assert answer.status_code in (200, 409), answer.text  # 409: the openings came past the deadline
            verdicts.append(answer.json() if answer.status_code == 200 else
                            {"outcome": "fail", "correctness": "pass", "timing": "slower-than-claimed",
                             "measured_s": float("inf"), "reasons": [answer.json()["detail"]]})
    m, n, k, r = shape
    return verdicts, compute_s, 2.0 * m * n * k * r / rate


def test_a_long_poll_hears_of_its_round_at_once_on_every_device(servers):  # noqa: F811
    """Two devices keep long polls open; the round falls due while they wait: both get their challenge, of one
    instant, well inside the start window; push-to-start latency (arrival minus the round's instant) is
    printed (docs/performance.md quotes it)."""
    server = servers()
    key = signatures.new_private_key()
    with GatewayClient(server.base, key=key) as client:
        client.register("listener", [{"model": "cpu-reference", "vram_gib": 4}] * 2)
        first = client.poll(0)  # registration makes the first round due at once
        assert first.challenge is not None
        engine = create_engine(server.env["GPUPROOF_DATABASE_URL"])
        got: dict[int, tuple[ChallengeOut | None, float]] = {}

        def listen(position: int) -> None:
            with GatewayClient(server.base, key=key, provider_id=client.provider_id) as mine:
                poll = mine.poll(position, wait_s=10)
                got[position] = (poll.challenge, time.time())

        # answer nothing of round 1: its challenges stay open and would be handed back; judge them away
        with engine.begin() as conn:
            conn.exec_driver_sql("UPDATE challenges SET state = 'judged'")
        listeners = [threading.Thread(target=listen, args=(p,)) for p in (0, 1)]
        for t in listeners:
            t.start()
        time.sleep(0.5)  # both are waiting now
        with engine.begin() as conn:
            conn.execute(update(Device).values(next_due_at=time.time() + 1.0))  # the round falls due in 1 s
        for t in listeners:
            t.join(timeout=30)
        engine.dispose()
    (c0, at0), (c1, at1) = got[0], got[1]
    assert c0 is not None and c1 is not None, got
    assert c0.issued_at == c1.issued_at and c0.challenge_id != c1.challenge_id
    latencies = [at0 - c0.issued_at, at1 - c1.issued_at]
    print(f"push-to-start latency: {', '.join(f'{x * 1000:.0f} ms' for x in latencies)}")
    assert max(latencies) < SchedulePolicy().start_window_s, latencies


def test_a_long_poll_answers_an_open_challenge_at_once_and_nothing_due_after_its_wait(servers):  # noqa: F811
    server = servers()
    with GatewayClient(server.base, key=signatures.new_private_key()) as client:
        client.register("quiet", [{"model": "cpu-reference", "vram_gib": 4}])
        c = client.poll(0).challenge
        assert c is not None
        started = time.monotonic()
        again = client.poll(0, wait_s=3)  # the open challenge comes back at once, not after the wait
        assert again.challenge is not None and again.challenge.challenge_id == c.challenge_id
        assert time.monotonic() - started < 3
        engine = create_engine(server.env["GPUPROOF_DATABASE_URL"])
        with engine.begin() as conn:
            conn.exec_driver_sql("UPDATE challenges SET state = 'judged'")
        engine.dispose()
        started = time.monotonic()
        nothing = client.poll(0, wait_s=1.5)  # the next round is ~an hour away: 204 once the wait is over
        waited = time.monotonic() - started
        assert nothing.challenge is None and nothing.mean_interval_s == 3600 and waited >= 1.4, waited
        raw = httpx.post(f"{server.base}/v1/providers/{client.provider_id}/challenges")  # unsigned: refused
        assert raw.status_code in (401, 422)


def test_a_provider_cannot_call_rounds_at_will(gateway):
    """Reproduction: a registration update that changes a claim made the device due at once, and its poll
    issued a round for every device; toggling a claim called rounds at will (five passes in seconds). Now no
    two rounds of a provider come closer than the minimum gap, whatever moved a device's time."""
    from gpuproof.client import signed_headers
    from gpuproof.gateway.models import Challenge

    gateway.app.state.gp.settings.challenge_min_gap_s = 300.0
    p = Provider(gateway, ["cpu-reference", "cpu-reference"])
    assert p.post(f"/v1/providers/{p.id}/challenges", {"device": 0}).status_code == 201  # the first round
    body = {"name": "box", "devices": [{"model": "cpu", "vram_gib": 8}, {"model": "cpu-reference", "vram_gib": 8}]}
    raw = __import__("json").dumps(body).encode()
    path = f"/v1/providers/{p.id}"
    r = gateway.client.put(path, content=raw, headers=signed_headers(p.key, p.id, "PUT", path, raw,
                                                                               audience=gateway.audience))
    assert r.status_code == 200, r.text
    with gateway.app.state.gp.db.writer() as s:
        s.execute(update(Challenge).values(state="judged"))
        s.commit()
    assert p.post(f"/v1/providers/{p.id}/challenges", {"device": 0}).status_code == 204  # not yet
    with gateway.app.state.gp.db.writer() as s:
        s.execute(update(Challenge).values(issued_at=Challenge.issued_at - 301))  # the gap has passed
        s.commit()
    assert p.post(f"/v1/providers/{p.id}/challenges", {"device": 0}).status_code == 201


def test_a_second_long_poll_for_one_device_does_not_wait(servers):  # noqa: F811
    """A provider opening many long polls for one device would make each re-read the database every second:
    only one waits, the others are answered at once."""
    server = servers()
    key = signatures.new_private_key()
    with GatewayClient(server.base, key=key) as client:
        client.register("eager", [{"model": "cpu-reference", "vram_gib": 4}])
        assert client.poll(0).challenge is not None
        engine = create_engine(server.env["GPUPROOF_DATABASE_URL"])
        with engine.begin() as conn:
            conn.exec_driver_sql("UPDATE challenges SET state = 'judged'")
        engine.dispose()
        done: dict[str, float] = {}

        def wait_long() -> None:
            with GatewayClient(server.base, key=key, provider_id=client.provider_id) as mine:
                assert mine.poll(0, wait_s=4).challenge is None
                done["waiting"] = time.monotonic()

        first = threading.Thread(target=wait_long)
        first.start()
        time.sleep(1.0)  # the first poll is waiting now
        second = client.poll(0, wait_s=4)
        done["second"] = time.monotonic()
        first.join(timeout=60)
    assert second.challenge is None and done["second"] < done["waiting"], done


def test_a_poll_that_issues_a_round_takes_the_write_lock_once(gateway):
    """Issue 18 (an honest provider's challenges unaffected by a flood of writes): the poll that issues a
    round, and the one that hands out an open challenge, store the answer's round-trip probe in the same write
    transaction. Before, the probe took a second write transaction after the round was committed: under a
    flood it waited for SQLite's write lock while the challenge's clock already ran (the bench's honest
    provider failed on time, measured 0.4-0.6 s against a 0.33 s limit). Counted, not timed."""
    from sqlalchemy import event

    from tests.gateway.test_api import Agent

    if not gateway.app.state.gp.db.is_sqlite:
        pytest.skip("counts SQLite's write transactions (its write engine's BEGIN IMMEDIATE); PostgreSQL reads "
                    "and writes share one engine")
    agent = Agent(gateway)
    begun: list[str] = []
    engine = gateway.app.state.gp.db.write_engine
    listener = lambda conn: begun.append("begin")  # noqa: E731
    event.listen(engine, "begin", listener)
    try:
        for expected in (201, 200):  # the round issued, then the same challenge handed out again
            begun.clear()
            r = agent.next()
            assert r.status_code == expected, r.text
            assert r.headers["X-Gpuproof-Rtt-Probe"]
            assert begun == ["begin"], begun
    finally:
        event.remove(engine, "begin", listener)
