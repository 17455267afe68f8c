"""Attacks on the gateway: each rejected with the right status and reason, and the database unchanged.

(Replays, altered bodies, other providers' keys, missing scopes and clock skew are in
tests/gateway/test_api.py; these are the rest of the campaign in docs/threat-model.md.)
"""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import pytest
from gpuproof.verifier import signatures

from tests.gateway.test_api import Agent, assert_problem, db_counts
from tests.support.calibrate import scaled
from tests.support.clock import stopped_limiter
from tests.support.server import Server


@pytest.mark.parametrize("model", ["' OR 1=1 --", "x'; DROP TABLE providers; --", "%", "_", "\\", "\x00"])
def test_sql_metacharacters_in_filters_are_data(gateway, model):
    Agent(gateway)
    before = db_counts(gateway)
    r = gateway.client.get("/v1/providers", params={"model": model})
    assert r.status_code in (200, 422), r.text
    if r.status_code == 200:
        assert r.json()["total"] == 0
    assert gateway.client.get("/v1/providers").json()["total"] == 1
    assert db_counts(gateway) == before


def test_html_in_names_is_stored_verbatim_and_served_as_json_data(gateway):
    name = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    agent = Agent(gateway, name=name)
    r = gateway.client.get(f"/v1/providers/{agent.id}")
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["name"] == name  # data, never markup: clients must escape it (the dashboard does)


def test_deeply_nested_and_huge_json_is_refused_cleanly(gateway):
    agent = Agent(gateway)
    before = db_counts(gateway)
    nested = b'{"device": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    path = f"/v1/providers/{agent.id}/challenges"
    from gpuproof.client import signed_headers

    r = gateway.client.post(path, content=nested, headers=signed_headers(agent.key, agent.id, "POST", path, nested,
                                                                                  audience=gateway.audience))
    assert_problem(r, 400, "nested deeper than the parser allows")  # a sentence, not the parser's words
    assert r.json()["title"] == "Malformed body"
    many = json.dumps({"roots": ["00" * 32] * 200_000}).encode()
    r = gateway.client.post(f"/v1/challenges/{'0' * 32}/commitment", content=many,
                            headers=signed_headers(agent.key, agent.id, "POST", f"/v1/challenges/{'0' * 32}/commitment",
                                                   many, audience=gateway.audience))
    assert r.status_code in (413, 422)
    assert db_counts(gateway) == before


def test_a_flooding_provider_is_rate_limited_and_others_are_not(database_url, tmp_path):
    from fastapi.testclient import TestClient
    from gpuproof.gateway.app import create_app
    from gpuproof.gateway.settings import Settings

    from tests.gateway.conftest import Gateway

    settings = Settings(data_dir=tmp_path / "d", database_url=database_url, provider_rate_per_s=5,
                        ip_rate_per_s=10_000, verify_test_shape="16,256,64,3")
    app = create_app(settings)
    with TestClient(app) as client:
        gw = Gateway(client, settings, app)
        flood, calm = Agent(gw, "flood"), Agent(gw, "calm")
        clock = stopped_limiter(app)  # time stands still: the result does not depend on this machine's speed
        codes = [flood.post(f"/v1/providers/{flood.id}/rtt", {"probe": "0" * 32}).status_code for _ in range(40)]
        assert codes[:10] == [404] * 10 and codes[10:] == [429] * 30  # a burst of 2 s x 5/s, then cut at the door
        limited = flood.post(f"/v1/providers/{flood.id}/rtt", {"probe": "0" * 32})
        assert_problem(limited, 429, "requests/s from this provider")
        assert int(limited.headers["Retry-After"]) >= 1
        assert calm.next().status_code == 201  # the other provider is unaffected
        clock.advance(0.2)  # one token back at 5/s
        assert flood.post(f"/v1/providers/{flood.id}/rtt", {"probe": "0" * 32}).status_code == 404
        assert flood.post(f"/v1/providers/{flood.id}/rtt", {"probe": "0" * 32}).status_code == 429


def test_slow_loris_bodies_time_out_and_do_not_block_others(tmp_path):
    """A body trickled for 3x the body timeout is cut off with 408; meanwhile another request is answered
    within the body timeout (were the slow body blocking, it would wait for the timeout). The timeout is
    1 s on the reference machine, scaled to this one (tests/support/calibrate.py)."""
    body_timeout = round(scaled(1.0), 1)
    server = Server(f"sqlite:///{tmp_path / 'gw.db'}", tmp_path / "gw",
                    GPUPROOF_BODY_TIMEOUT_S=str(body_timeout)).start()
    try:
        slow = socket.create_connection(("127.0.0.1", server.port))
        slow.sendall(b"POST /v1/providers HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n{")
        answers: list[bytes] = []

        def trickle() -> None:
            try:
                for _ in range(30):
                    time.sleep(body_timeout / 10)
                    slow.sendall(b" ")
            except OSError:
                pass
            answers.append(slow.recv(4096))

        t = threading.Thread(target=trickle)
        t.start()
        started = time.monotonic()
        assert httpx.get(f"{server.base}/v1/providers", timeout=scaled(5)).status_code == 200  # others are served
        assert time.monotonic() - started < body_timeout
        t.join(timeout=scaled(10))
        assert answers and answers[0].startswith(b"HTTP/1.1 408"), answers
        assert f"did not arrive within {body_timeout:g} s".encode() in answers[0]
        slow.close()
    finally:
        server.stop()


def test_clock_skewed_and_future_requests_change_nothing(gateway):
    agent = Agent(gateway)
    before = db_counts(gateway)
    for skew in (-3600, -61, 61, 3600):
        r = agent.post(f"/v1/providers/{agent.id}/challenges", {"device": 0},
                       **{"X-Gpuproof-Timestamp": str(int(time.time()) + skew)})
        assert_problem(r, 401, "window")
    assert db_counts(gateway) == before


def test_signature_for_one_path_cannot_be_used_on_another(gateway):
    agent = Agent(gateway)
    body = json.dumps({"device": 0}).encode()
    from gpuproof.client import signed_headers

    headers = signed_headers(agent.key, agent.id, "POST", f"/v1/providers/{agent.id}/rtt", body,
                             audience=gateway.audience)
    before = db_counts(gateway)
    r = gateway.client.post(f"/v1/providers/{agent.id}/challenges", content=body, headers=headers)
    assert_problem(r, 401, "does not verify")
    other = signatures.new_private_key()
    headers = signed_headers(other, agent.id, "POST", f"/v1/providers/{agent.id}/challenges", body,
                             audience=gateway.audience)
    assert_problem(gateway.client.post(f"/v1/providers/{agent.id}/challenges", content=body, headers=headers), 401,
                   "does not verify")
    assert db_counts(gateway) == before


def test_a_chunked_body_over_the_limit_is_413_not_a_parse_error(tmp_path):
    server = Server(f"sqlite:///{tmp_path / 'gw.db'}", tmp_path / "gw", GPUPROOF_MAX_BODY_BYTES="1000").start()
    try:
        def chunks():
            for _ in range(50):
                yield b"x" * 100

        r = httpx.post(f"{server.base}/v1/providers", content=chunks(), timeout=scaled(10),
                       headers={"Content-Type": "application/json"})
        assert r.status_code == 413 and "limited to 1000 bytes" in r.json()["detail"]
    finally:
        server.stop()


def test_a_small_order_key_cannot_register_or_poll_without_a_private_key(gateway):
    """Issue 18: the identity point 01 00..00 as a public key with the "universal" signature R = identity,
    S = 0 registered and then polled as that provider, with no private key at all."""
    identity = bytes([1]) + bytes(31)
    forged = (identity + bytes(32)).hex()
    devices = [{"model": "cpu-reference", "count": 1, "vram_gib": 1.0}]
    before = db_counts(gateway)
    pid = signatures.provider_id(identity)
    headers = {"X-Gpuproof-Provider": pid, "X-Gpuproof-Timestamp": str(int(time.time())),
               "X-Gpuproof-Nonce": "n" * 16, "X-Gpuproof-Signature": forged, "Content-Type": "application/json",
               "X-Gpuproof-Signature-Version": "2"}
    r = gateway.client.post("/v1/providers", json={"public_key": identity.hex(), "name": "nobody",
                                                   "devices": devices}, headers=headers)
    assert_problem(r, 401, "small order")
    path = f"/v1/providers/{pid}/challenges"
    assert gateway.client.post(path, content=b'{"device": 0}', headers=headers).status_code in (401, 404)
    assert db_counts(gateway) == before


def test_x_forwarded_for_counts_only_from_the_configured_proxies(tmp_path):
    """`gpuproof gateway serve` ran uvicorn with its default, which trusts X-Forwarded-For from 127.0.0.1: a
    client on loopback (or behind a proxy that passes the header on) named a fresh address in every request
    and was never rate limited (60 requests, no 429). Now the header counts only from the proxies named
    with --forwarded-allow-ips; from those, each forwarded client has a bucket of its own."""
    import httpx

    from tests.support.server import Server

    def flood(server: Server, forwarded) -> list[int]:  # noqa: ANN001
        with httpx.Client(base_url=server.base, timeout=scaled(10)) as client:
            return [client.get("/v1/log/head", headers={"X-Forwarded-For": forwarded(i)}).status_code
                    for i in range(60)]

    def fresh(i: int) -> str:
        return f"198.51.100.{i + 1}"

    def same(i: int) -> str:
        return "203.0.113.9"

    env = {"GPUPROOF_IP_RATE_PER_S": "1", "GPUPROOF_MAINTENANCE_INTERVAL_S": "0"}  # a burst of 2, then 1/s
    server = Server(f"sqlite:///{tmp_path / 'a.db'}", tmp_path / "a", serve=(), **env).start()
    try:
        codes = flood(server, fresh)
        assert codes.count(429) >= 40, codes  # the connection's address: one bucket, whatever the header says
    finally:
        server.stop()
    behind = Server(f"sqlite:///{tmp_path / 'b.db'}", tmp_path / "b", serve=("--forwarded-allow-ips", "127.0.0.1"),
                    **env).start()
    try:
        assert 429 not in flood(behind, fresh)  # the proxy's clients: a bucket each
        assert flood(behind, same).count(429) >= 40  # one of them flooding is cut
    finally:
        behind.stop()


def test_openings_are_exactly_the_requested_rows_as_json_integers(gateway):
    """Issue 18, protocol hygiene: a passing transcript stored an extra garbage opening (up to ~8 MB of junk
    per challenge), "390" and 2.0 were accepted as integers, and round 2**70 was stored verbatim. Each is
    now refused 422 before any verification, and the honest answer that follows passes and is stored alone."""
    agent = Agent(gateway)
    c = agent.next().json()
    cid = c["challenge_id"]
    params, roots = agent.prove(c)
    req = agent.post(f"/v1/challenges/{cid}/commitment", {"roots": [r.hex() for r in roots]})
    assert req.status_code == 200, req.text
    pairs = {tuple(p) for p in req.json()["pairs"]}
    honest = agent.openings(params, roots, pairs)["openings"]
    stranger = next((r, i) for r in range(params.rounds) for i in range(params.m) if (r, i) not in pairs)
    junk = {"round": stranger[0], "row": stranger[1], "values": [0] * params.n, "path": honest[0]["path"]}
    first = honest[0]
    cases = {
        "a row nobody asked for": (honest + [junk], "was not requested"),
        "a row twice": (honest + [first], "opened twice"),
        "a string for an integer": ([first | {"round": str(first["round"])}] + honest[1:], "valid integer"),
        "a float for an integer": ([first | {"row": float(first["row"])}] + honest[1:], "valid integer"),
        "a value as a float": ([first | {"values": [float(v) for v in first["values"]]}] + honest[1:],
                               "valid integer"),
        "round 2**70": ([first | {"round": 2**70}] + honest[1:], "less than 2147483648"),
    }
    before = db_counts(gateway)
    for name, (openings, fragment) in cases.items():
        r = agent.post(f"/v1/challenges/{cid}/openings", {"openings": openings})
        assert r.status_code == 422 and fragment in r.json()["detail"], (name, r.text)
    assert db_counts(gateway) == before  # nothing judged, logged or stored
    verdict = agent.post(f"/v1/challenges/{cid}/openings", {"openings": honest})
    assert verdict.status_code == 200 and verdict.json()["outcome"] == "pass", verdict.text
    stored = gateway.client.get(f"/v1/challenges/{cid}/transcript").json()["openings"]
    assert sorted((o["round"], o["row"]) for o in stored) == sorted(pairs)
