"""The trust cache's rules (gateway.trust_cache.TrustCache): fresh entries as they are, expired ones served
while one refresh runs, too old ones recomputed, and an entry dropped by a verdict never brought back by
a refresh that read the database before it."""

from __future__ import annotations

import asyncio
import threading
import time

from gpuproof.gateway.trust_cache import TrustCache

from tests.support.calibrate import scaled


class Compute:
    """A trust computation that counts its calls and, while `gate` is clear, waits for it."""

    def __init__(self) -> None:
        self.calls = 0
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, provider_id: str) -> bytes:
        self.calls += 1
        answer = f"{provider_id} answer {self.calls}".encode()
        assert self.gate.wait(scaled(10))
        return answer


async def until(condition) -> None:  # noqa: ANN001
    """Let the event loop run until `condition()` holds (scaled(10) s at most)."""
    deadline = asyncio.get_running_loop().time() + scaled(10)
    while not condition():
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.005)


def test_an_expired_entry_is_served_while_one_refresh_runs():
    async def main() -> None:
        cache, compute = TrustCache(ttl=3600), Compute()
        assert cache.cached("p", compute) is None  # nothing cached: the caller computes (get_or_compute)
        assert await cache.get_or_compute("p", compute) == b"p answer 1"
        compute.gate.clear()
        cache._entries["p"] = (time.monotonic() - 1.0, cache._entries["p"][1])  # expired a second ago
        # Expired but within max_stale (the TTL): the old answer, and one refresh for any number of reads.
        assert [cache.cached("p", compute) for _ in range(5)] == [b"p answer 1"] * 5
        assert await cache.get_or_compute("p", compute) == b"p answer 1"
        compute.gate.set()
        await until(lambda: cache.cached("p", compute) != b"p answer 1")
        assert compute.calls >= 2 and cache.cached("p", compute).startswith(b"p answer ")

    asyncio.run(main())


def test_an_entry_older_than_max_stale_is_recomputed_before_it_is_served():
    async def main() -> None:
        cache, compute = TrustCache(ttl=0.0, max_stale=0.0), Compute()
        assert await cache.get_or_compute("p", compute) == b"p answer 1"
        await asyncio.sleep(0.01)
        assert cache.cached("p", compute) is None and compute.calls == 1
        assert await cache.get_or_compute("p", compute) == b"p answer 2"

    asyncio.run(main())


def test_a_refresh_that_read_before_a_verdict_does_not_outlive_its_drop():
    """A refresh reads the database, a verdict lands and drops the entry, then the refresh finishes: its
    answer, from before the verdict, goes to the readers that asked before the drop but is not cached
    (it was, for a whole TTL, before)."""
    async def main() -> None:
        cache, compute = TrustCache(ttl=3600), Compute()
        compute.gate.clear()
        reader = asyncio.create_task(cache.get_or_compute("p", compute))
        await asyncio.sleep(0)  # the reader started the refresh, which now waits at the gate
        cache.drop("p")  # the verdict
        compute.gate.set()
        assert await reader == b"p answer 1"
        assert cache.cached("p", compute) is None
        assert await cache.get_or_compute("p", compute) == b"p answer 2"
        assert cache.cached("p", compute) == b"p answer 2"

    asyncio.run(main())


def test_a_cache_keeps_at_most_max_entries_dropping_expired_ones_first():
    """The page cache's keys are whatever a reader asks for (a page's parameters): bounded by max_entries,
    beyond which the expired entries go first, then all."""
    now = [0.0]
    cache = TrustCache(1.0, max_entries=4, clock=lambda: now[0])

    async def fill(keys) -> None:  # noqa: ANN001
        for k in keys:
            await cache.get_or_compute(k, lambda key: key.encode())

    async def main() -> None:
        await fill(["a", "b", "c"])
        now[0] = 5.0  # a, b, c expired past their stale allowance
        await fill(["d", "e"])
        assert sorted(cache._entries) == ["d", "e"]
        await fill(["f", "g", "h"])  # d..g live: full, so all go before h
        assert sorted(cache._entries) == ["h"]

    asyncio.run(main())
