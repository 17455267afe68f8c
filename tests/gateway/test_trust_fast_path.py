"""Cached trust reads answered before FastAPI (gateway.app.TrustFastPath, what uvicorn serves): the same
answers as the route for the same state, the same rate limit and metrics, and everything it does not
answer left to the route."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient
from gpuproof.gateway.app import TrustFastPath, create_app
from gpuproof.gateway.settings import Settings

from tests.gateway.test_api import Agent, assert_problem
from tests.support.clock import ManualClock, stopped_limiter

ROUTE_COUNT = re.compile(r'^gpuproof_request_seconds_count\{method="GET",route="/v1/providers/\{provider_id\}/trust",'
                         r'status="(\d+)"\} (\S+)$', re.M)


@dataclass
class Served:
    """A gateway behind the fast path, and the requests that got past it to the application."""

    client: TestClient
    app: object
    routed: list[str]
    clock: ManualClock  # the rate limiter's: it moves only when the test moves it

    def refill(self) -> None:
        """A full bucket for the test client's address again."""
        self.clock.advance(60)

    def get(self, path: str, **kwargs):  # noqa: ANN201
        """GET `path`; also says whether the application (the route) answered it rather than the fast path."""
        before = len(self.routed)
        response = self.client.get(path, **kwargs)
        return response, len(self.routed) > before

    def counts(self) -> dict[str, float]:
        """gpuproof_request_seconds_count of the trust route by status (/metrics goes to the application)."""
        text = self.client.get("/metrics").text
        del self.routed[-1]
        return {status: float(n) for status, n in ROUTE_COUNT.findall(text)}


@pytest.fixture
def served(database_url, tmp_path):
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url, verify_test_shape="16,256,64,3",
                        challenge_interval_s=0, provider_rate_per_s=1000, ip_rate_per_s=5, trust_cache_s=60,
                        maintenance_interval_s=0)
    app = create_app(settings)
    routed: list[str] = []

    async def counted(scope, receive, send):  # noqa: ANN001 - the ASGI triple
        if scope["type"] == "http":
            routed.append(scope["path"])
        await app(scope, receive, send)

    with TestClient(TrustFastPath(counted, app.state.gp)) as client:
        yield Served(client, app, routed, stopped_limiter(app))  # a burst of 10 requests, then 429s


def agent_with_a_verdict(served: Served) -> Agent:
    agent = Agent(served)
    agent.full_round()
    served.refill()  # the agent's own requests took tokens too
    return agent


def test_a_cached_read_is_the_routes_answer_byte_for_byte(served):
    agent = agent_with_a_verdict(served)
    url = f"/v1/providers/{agent.id}/trust"
    routed, by_route = served.get(url)
    fast, by_route_again = served.get(url)
    assert (by_route, by_route_again) == (True, False)  # the miss computed the entry; the next read skipped FastAPI
    assert fast.status_code == routed.status_code == 200 and fast.json()["evidence"] == 1
    assert fast.content == routed.content
    assert fast.headers.raw == routed.headers.raw  # the same headers, in the same order


def test_cached_reads_are_counted_under_the_routes_template(served):
    agent = agent_with_a_verdict(served)
    url = f"/v1/providers/{agent.id}/trust"
    served.get(url)
    before = served.counts()
    results = [served.get(url) for _ in range(4)]
    assert [(r.status_code, by_route) for r, by_route in results] == [(200, False)] * 4
    after = served.counts()
    assert after["200"] - before["200"] == 4


def test_the_per_address_limit_holds_on_the_fast_path_with_the_routes_429(served):
    agent = agent_with_a_verdict(served)
    url = f"/v1/providers/{agent.id}/trust"
    served.get(url)  # cached now; 9 tokens of the burst of 10 are left
    before = served.counts()
    results = [served.get(url) for _ in range(12)]
    assert [r.status_code for r, _ in results] == [200] * 9 + [429] * 3
    assert not any(by_route for _, by_route in results)  # a limited client is refused before FastAPI too
    fast_429 = results[-1][0]
    assert_problem(fast_429, 429, "requests/s from this address")
    assert int(fast_429.headers["Retry-After"]) >= 1
    served.app.state.gp.trust_cache.drop(agent.id)  # a miss: the route's own limit answers
    routed_429, by_route = served.get(url)
    assert by_route and routed_429.status_code == 429
    assert fast_429.content == routed_429.content and fast_429.headers.raw == routed_429.headers.raw
    after = served.counts()
    assert after["429"] - before.get("429", 0) == 4 and after["200"] - before["200"] == 9


def test_what_the_fast_path_does_not_answer_goes_to_the_route(served):
    agent = agent_with_a_verdict(served)
    url = f"/v1/providers/{agent.id}/trust"
    served.get(url)
    unknown, by_route = served.get(f"/v1/providers/{'0' * 32}/trust")
    assert by_route
    assert_problem(unknown, 404, "no provider")
    for malformed in (agent.id.upper(), agent.id[:-1], agent.id + "0"):
        r, by_route = served.get(f"/v1/providers/{malformed}/trust")
        assert by_route
        assert_problem(r, 422, "provider_id")
    for lookalike in (f"/v1/providerz/{agent.id}/trust", f"/v1/providers/{agent.id}/trusts"[:-2] + "X",
                      f"/v2/providers/{agent.id}/trust"):  # (the first and last as long as a trust path)
        assert served.get(lookalike)[1], lookalike
    served.refill()
    assert served.get(url + "%0A")[1] and served.get(url + "/")[1]  # "$" would have matched before a newline
    assert served.get(url, params={"x": "1"})[1]  # a query string: the route decides what it means
    for method in ("HEAD", "POST", "PUT", "DELETE", "OPTIONS"):
        before = len(served.routed)
        served.client.request(method, url)
        assert len(served.routed) == before + 1, method
    before = len(served.routed)  # a GET with a body: the app's body limit answers it, as for the route
    served.client.request("GET", url, content=b"{}")
    assert len(served.routed) == before + 1


def test_the_replies_kept_are_bounded_and_each_answers_its_own_provider(served, monkeypatch):
    first, second = agent_with_a_verdict(served), agent_with_a_verdict(served)
    fast = served.client.app
    monkeypatch.setattr(fast, "REPLIES_KEPT", 1)
    for agent in (first, second, first, second):
        served.refill()
        url = f"/v1/providers/{agent.id}/trust"
        routed, _ = served.get(url)
        answer, by_route = served.get(url)
        assert not by_route and answer.content == routed.content and answer.json()["provider_id"] == agent.id
        assert len(fast._replies) == 1


def test_a_verdict_drops_the_cached_answer_and_the_next_read_shows_it(served):
    agent = agent_with_a_verdict(served)
    url = f"/v1/providers/{agent.id}/trust"
    served.get(url)
    assert served.get(url)[0].json()["evidence"] == 1
    served.refill()
    agent.full_round()  # its verdict drops the provider's entry (gateway/routers/challenges.py)
    after, by_route = served.get(url)
    assert by_route and after.json()["evidence"] == 2
    again, by_route = served.get(url)
    assert not by_route and again.content == after.content


def test_a_refused_reader_starts_no_refresh_of_an_expired_entry(served):
    """A client past its per-address limit is answered 429 and costs the gateway nothing more: before, the
    fast path looked the entry up first, and an expired one started its refresh (a database read on a
    thread) for a reader about to be refused, one per provider per TTL (issue 18, "no request cheap to send
    and dear to serve")."""
    agent = agent_with_a_verdict(served)
    url = f"/v1/providers/{agent.id}/trust"
    served.get(url)  # cached now; 9 tokens of the burst of 10 are left
    for _ in range(9):
        assert served.get(url)[0].status_code == 200
    cache = served.app.state.gp.trust_cache
    at, body = cache._entries[agent.id]
    cache._entries[agent.id] = (at - cache.ttl - 30, body)  # expired, still within the stale allowance
    cache.max_stale = 3600.0
    refused, by_route = served.get(url)
    assert refused.status_code == 429 and not by_route
    expired_at = cache._entries[agent.id][0]
    assert agent.id not in cache._inflight and cache._entries[agent.id] == (expired_at, body)  # none started...
    assert served.get(f"/v1/providers/{agent.id}/verdicts")[0].status_code == 429  # (the loop ran meanwhile)
    assert cache._entries[agent.id] == (expired_at, body)  # ...and none finished either
    served.refill()
    answered, by_route = served.get(url)  # a reader the limit lets through is served the stale entry...
    assert answered.status_code == 200 and not by_route and answered.content == body
    assert agent.id in cache._inflight or cache._entries[agent.id][0] > at  # ...and starts the refresh


@pytest.mark.parametrize("path", ["trust", "listing"])
def test_a_limiter_that_waits_on_the_network_is_asked_off_the_event_loop(served, path):
    """A shared (Redis) limiter's take is a network round trip, up to its 0.25 s timeout when Redis is slow:
    asked on the event loop (as it was, by the fast path and every route's per-address limit), it stopped
    every other request meanwhile. Here four reads' takes wait for one another at a barrier: on the loop the
    first one waits alone until the barrier breaks (the others cannot start); off the loop all four meet."""
    import threading

    agent = agent_with_a_verdict(served)
    url = f"/v1/providers/{agent.id}/trust" if path == "trust" else "/v1/providers"
    served.get(url)  # cached (the trust read)
    meet = threading.Barrier(4, timeout=10)

    class SlowShared:
        blocking = True

        def take(self, key: str, rate: float, burst: float) -> float | None:
            meet.wait()
            return None

    served.app.state.gp.limiter = SlowShared()
    answers: list[int] = []
    readers = [threading.Thread(target=lambda: answers.append(served.client.get(url).status_code)) for _ in range(4)]
    for r in readers:
        r.start()
    for r in readers:
        r.join(timeout=30)
    assert not meet.broken and answers == [200] * 4, answers
