"""The token buckets behind the gateway's 429s, on a clock the test moves (no wall-clock timing)."""

from __future__ import annotations

import pytest
from gpuproof.gateway.limits import RateLimiter
from hypothesis import given
from hypothesis import strategies as st

from tests.support.clock import ManualClock


def test_a_burst_then_the_rate_and_the_wait_it_reports():
    clock = ManualClock()
    limiter = RateLimiter(clock=clock)
    assert [limiter.take("a", 5, 10) for _ in range(10)] == [None] * 10
    assert limiter.take("a", 5, 10) == pytest.approx(0.2)  # one token at 5/s
    clock.advance(0.1)
    assert limiter.take("a", 5, 10) == pytest.approx(0.1)  # half a token refilled
    clock.advance(0.1)
    assert limiter.take("a", 5, 10) is None
    assert limiter.take("b", 5, 10) is None  # another key has its own bucket
    clock.advance(3600)
    assert [limiter.take("a", 5, 10) for _ in range(11)].count(None) == 10  # refills to the burst, not beyond


@given(st.lists(st.tuples(st.floats(0, 2), st.integers(0, 3)), max_size=60))
def test_never_more_than_the_burst_plus_the_rate_times_the_time(steps):
    """Whatever the pattern of requests, what is allowed in [0, t] is at most burst + rate * t."""
    clock = ManualClock(0.0)
    limiter = RateLimiter(clock=clock)
    allowed = 0
    for dt, n in steps:
        clock.advance(dt)
        allowed += sum(limiter.take("k", 3, 6) is None for _ in range(n))
        assert allowed <= 6 + 3 * clock.now + 1e-9


def test_forgetting_drops_refilled_buckets_first_so_a_busy_key_keeps_its_debt():
    clock = ManualClock()
    limiter = RateLimiter(clock=clock, max_keys=100)
    assert [limiter.take("busy", 1, 2) is None for _ in range(3)] == [True, True, False]
    for i in range(99):
        limiter.take(f"ip:{i}", 1, 2)  # full again after 1 s
    clock.advance(1.5)
    limiter.take("ip:new", 1, 2)  # 101 keys: the refilled ones are forgotten, "busy" (1.5 of 2 tokens) is not
    assert len(limiter._buckets) == 2
    assert limiter.take("busy", 1, 2) is None and limiter.take("busy", 1, 2) is not None


def test_memory_stays_bounded_under_a_flood_of_live_keys():
    """Past the bound with no bucket refilled, the least recently used half goes (each eviction costs
    the flooder max_keys / 2 allowed requests of its own, so it gains nothing by it)."""
    clock = ManualClock()
    limiter = RateLimiter(clock=clock, max_keys=100)
    for i in range(1000):
        limiter.take(f"ip:{i}", 1, 2)
        assert len(limiter._buckets) <= 100
    assert "ip:999" in limiter._buckets and "ip:0" not in limiter._buckets
