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
    """Past the bound with no bucket refilled, the live ones nearest to full go, down to half (each eviction
    costs the flooder max_keys / 4 allowed requests of its own at least, so it gains nothing by it)."""
    clock = ManualClock()
    limiter = RateLimiter(clock=clock, max_keys=100)
    for i in range(1000):
        limiter.take(f"ip:{i}", 1, 2)
        assert len(limiter._buckets) <= 100
    assert "ip:999" in limiter._buckets and "ip:0" not in limiter._buckets


class TextbookBucket:
    """The token bucket as usually written (tokens and the time of the last take per key, no bound on the
    keys), the reference the gateway's bounded buckets must agree with."""

    def __init__(self) -> None:
        self.buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str, rate: float, burst: float, now: float) -> float | None:
        tokens, last = self.buckets.get(key, (burst, now))
        tokens = min(burst, tokens + (now - last) * rate)
        if tokens >= 1:
            self.buckets[key] = (tokens - 1, now)
            return None
        self.buckets[key] = (tokens, now)
        return (1 - tokens) / rate


@given(st.lists(st.tuples(st.integers(0, 160), st.sampled_from("abc"), st.integers(1, 4)), max_size=80),
       st.sampled_from([1, 2, 4, 8]), st.sampled_from([1, 2, 3, 8]))
def test_the_same_answers_as_the_textbook_token_bucket(steps, rate, burst):
    """Every answer (allowed, or the wait) equals the textbook bucket's, on times and rates whose sums are
    exact in binary (sixty-fourths of a second, powers of two), so any difference is the algorithm's."""
    clock = ManualClock(1024.0)
    limiter, reference = RateLimiter(clock=clock), TextbookBucket()
    for sixty_fourths, key, n in steps:
        clock.advance(sixty_fourths / 64)
        for _ in range(n):
            assert limiter.take(key, rate, burst) == reference.take(key, rate, burst, clock.now)


def test_a_flood_of_fresh_keys_does_not_rescan_the_buckets_on_every_request(monkeypatch):
    """Keys that come one by one as fast as others refill kept the store at its bound, so every new key
    scanned all of them (O(max_keys) a request); now a scan leaves room for a quarter of the bound at least."""
    clock = ManualClock()
    limiter = RateLimiter(clock=clock, max_keys=128)
    scans = []
    forget = limiter._forget
    monkeypatch.setattr(limiter, "_forget", lambda now: (scans.append(now), forget(now)))
    for i in range(1280):  # each bucket is full again 1 s after its key's take: one refills per new key
        clock.advance(1 / 128)  # (exact in binary: a bucket is full again exactly when the 128th key after it comes)
        limiter.take(f"ip:{i}", 1, 2)
        assert len(limiter._buckets) <= 128
    assert len(scans) <= 1280 // 32 + 1
