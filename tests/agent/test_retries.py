"""The agent's retries wait longer each time: a gateway whose answer takes longer than the client's timeout
(a body whose packets are being retransmitted under loss, a slow link) is reached by a later retry, not
retried with the same timeout until the challenge expires (tests/reliability/test_netfaults.py's loss case
failed so in CI: 13 retries of one opening at 0.5 s each)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from gpuproof.agent.daemon import MAX_PATIENCE, with_retries
from gpuproof.client import GatewayClient, GatewayUnreachable

ANSWER_S = 1.2  # how long the gateway takes to answer; the client's own timeout is a quarter of it
TIMEOUT_S = ANSWER_S / 4


@pytest.fixture
def slow_gateway() -> Iterator[tuple[str, list[float]]]:
    """A real HTTP server on loopback that answers every GET after ANSWER_S; the arrival times it saw."""
    arrivals: list[float] = []

    class Slow(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            arrivals.append(time.monotonic())
            time.sleep(ANSWER_S)
            body = json.dumps({"ok": True}).encode()
            try:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except OSError:  # the client gave up first
                pass

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", arrivals
    finally:
        server.shutdown()
        server.server_close()


def test_each_retry_waits_twice_as_long_so_a_slow_answer_comes_through(slow_gateway):
    base, arrivals = slow_gateway
    retries: list[int] = []
    with GatewayClient(base, timeout=TIMEOUT_S) as client:
        started = time.monotonic()
        # timeouts 0.3, 0.6, 1.2 (still short of the answer, give or take scheduling), 2.4 s: through by the 4th
        answer = with_retries(client, lambda: client.transcript("c" * 32), limit_s=30, wait_multiplier=0.01,
                              wait_max_s=0.05, on_retry=retries.append)
        elapsed = time.monotonic() - started
    assert answer == {"ok": True}
    assert 3 <= len(arrivals) <= 4 and retries == list(range(2, len(arrivals) + 1)), (arrivals, retries)
    # the time spent is the doubling timeouts, not retries at one timeout until the limit
    assert elapsed < TIMEOUT_S * (1 + 2 + 4 + 8) + 1.0, elapsed


def test_patience_is_capped_and_the_last_error_is_raised_at_the_limit(slow_gateway):
    base, arrivals = slow_gateway
    with GatewayClient(base, timeout=ANSWER_S / (4 * MAX_PATIENCE)) as client, pytest.raises(GatewayUnreachable):
        with_retries(client, lambda: client.transcript("c" * 32), limit_s=2.5, wait_multiplier=0.01, wait_max_s=0.05)
    # 0.04, 0.08, 0.15, 0.3 s, then 0.3 s each (8 x the client's timeout), never the 1.2 s the answer needs
    assert len(arrivals) >= 6, arrivals


def test_patience_belongs_to_the_thread_that_retries(slow_gateway):
    """The daemon's workers share one client: one worker's retry makes only its own requests wait longer."""
    base, _ = slow_gateway
    sent: list[float] = []  # the read timeout each request went out with
    with GatewayClient(base, timeout=0.05) as client:
        client._http.event_hooks["request"].append(lambda request: sent.append(request.extensions["timeout"]["read"]))

        def one() -> None:
            with pytest.raises(GatewayUnreachable):
                client.transcript("c" * 32)

        with client.patience(4.0):
            other = threading.Thread(target=one)
            other.start()
            other.join()
            one()
        one()
    assert sent == pytest.approx([0.05, 0.2, 0.05])


def test_after_a_timeout_a_short_jitter_after_an_answered_error_or_a_refusal_backoff():
    """A timeout has already waited (a growing timeout): backing off on top of it spent an honest provider's
    deadline between tries; a 5xx, a 429 or a refused connection (the gateway busy or down) backs off."""
    from gpuproof.agent.daemon import Backoff
    from gpuproof.client import GatewayError
    from tenacity import RetryCallState, Retrying

    backoff = Backoff(0.5, 10)

    def waits(exc: BaseException, attempt: int = 6) -> list[float]:
        state = RetryCallState(Retrying(), None, (), {})
        state.attempt_number = attempt
        state.set_exception((type(exc), exc, None))
        return [backoff(state) for _ in range(200)]

    after_timeout = waits(GatewayUnreachable("http://gw", "ReadTimeout: timed out", timed_out=True))
    assert max(after_timeout) <= 0.5
    for exc in (GatewayUnreachable("http://gw", "ConnectError: refused"), GatewayError(503, {"title": "busy"}),
                GatewayError(429, {"title": "slow down"})):
        after = waits(exc)
        assert max(after) <= 10 and sum(after) / len(after) > 2, (exc, sum(after) / len(after))


def test_a_retry_never_waits_past_a_minute_unless_the_clients_own_timeout_is_longer():
    """With the agent's default timeout (30 s) doubling to 8x would hold a worker 4 min on one try, past the
    retry limit and a stop, which are seen between tries only."""
    from gpuproof.agent.daemon import patience

    def waits(timeout_s: float) -> list[float]:
        with GatewayClient("http://127.0.0.1:9", timeout=timeout_s) as client:
            return [timeout_s * patience(client, n) for n in range(1, 7)]

    assert waits(30.0) == [30.0, 60.0, 60.0, 60.0, 60.0, 60.0]
    assert waits(0.5) == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]  # 8x
    assert waits(120.0) == [120.0] * 6  # never shorter than the client's own
