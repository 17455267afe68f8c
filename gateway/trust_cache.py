"""Trust responses cached per provider (stale-while-revalidate), so a read-heavy score endpoint does not
queue on the database."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import anyio
import anyio.to_thread


class TrustCache:
    """Computed trust responses per provider, fresh for `ttl` seconds (settings.trust_cache_s, 0.5 s). The
    gateway keeps its public pages in a second one (`State.page_cache`, settings.page_cache_s: a page of
    GET /v1/providers and the dashboard's front page, keyed by the page's parameters instead of a provider).

    Scores are read far more often than verdicts arrive; the database stays the only truth. An expired
    entry is served while one refresh runs in the background (stale-while-revalidate) for at most
    `max_stale` seconds past its expiry (the TTL unless given), after which a reader waits for the
    refresh; refreshes run on their own few threads, so a burst of writes queued on the database lock
    never makes readers wait. This process drops a provider's entry when it records a verdict for it. A
    verdict judged by another process is seen by every read here that starts more than `ttl` +
    `max_stale` + one refresh after its commit: the entry may come from a refresh that read the database
    just before the commit and finished after it, is fresh for `ttl` from then, and is then served stale
    for up to `max_stale` more (docs/operations.md, "Trust cache").
    """

    def __init__(self, ttl: float, max_stale: float | None = None, *, max_entries: int = 50_000,
                 clock: Callable[[], float] = time.monotonic, held: HeldEvidence | None = None) -> None:
        """`max_entries`: beyond it the expired entries go, then, if still too many, all (each is a few
        hundred bytes for a score; the page cache keeps fewer: a page is up to ~100 kB). `clock`: tests.
        `held`: what the entries were computed from (the trust cache's HeldEvidence), dropped with an entry
        that is dropped (`drop`: this process recorded evidence); it keeps its own bound otherwise."""
        if max_stale is not None and max_stale > ttl:
            raise ValueError(f"max_stale must be at most the TTL ({ttl} s), got {max_stale} s")
        self.ttl, self.max_stale = ttl, ttl if max_stale is None else max_stale
        self.max_entries, self._clock = max_entries, clock
        self._entries: dict[str, tuple[float, bytes]] = {}
        self._inflight: dict[str, asyncio.Future] = {}
        self._limiter: anyio.CapacityLimiter | None = None
        self.held = held

    async def get_or_compute(self, provider_id: str, compute: Callable[[str], bytes]) -> bytes:
        """The provider's trust answer: the cached one (see `cached`), else `compute(provider_id)`'s, run
        on a thread of the cache's own, once however many readers wait for it."""
        cached = self.cached(provider_id, compute)
        if cached is not None:
            return cached
        pending = self._inflight.get(provider_id)
        if pending is None:
            pending = self._start(provider_id, compute)
        return await asyncio.shield(pending)

    def cached(self, provider_id: str, compute: Callable[[str], bytes]) -> bytes | None:
        """The entry when it is fresh, or when it expired at most `max_stale` seconds ago (then one refresh
        by `compute(provider_id)` starts in the background, if none runs); None when there is no such entry. Call it
        on the event loop."""
        body, stale = self.peek(provider_id)
        if stale:
            self.refresh(provider_id, compute)
        return body

    def peek(self, provider_id: str) -> tuple[bytes | None, bool]:
        """The entry `cached` would serve, and whether it is stale (it needs the refresh `cached` would start),
        starting nothing: for a reader that may yet be refused (gateway.app.TrustFastPath, which refreshes
        only for a reader its rate limit let through)."""
        now = self._clock()
        hit = self._entries.get(provider_id)
        if hit is None:
            return None, False
        if hit[0] >= now:
            return hit[1], False
        if now - hit[0] > self.max_stale:
            return None, False
        return hit[1], True

    def refresh(self, provider_id: str, compute: Callable[[str], bytes]) -> None:
        """Start one background refresh of the entry by `compute(provider_id)`, unless one runs."""
        if provider_id not in self._inflight:
            self._start(provider_id, compute)

    def _start(self, provider_id: str, compute: Callable[[str], bytes]) -> asyncio.Future:
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(4)
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._inflight[provider_id] = future

        async def refresh() -> None:
            try:
                value = await anyio.to_thread.run_sync(compute, provider_id, limiter=self._limiter)
            except BaseException as exc:
                future.set_exception(exc)
                future.exception()  # retrieved: no warning when nobody else waited
            else:
                if self._inflight.get(provider_id) is future:  # not dropped while it ran: still current
                    now = self._clock()
                    if len(self._entries) >= self.max_entries:
                        self._entries = {k: v for k, v in self._entries.items() if v[0] + self.max_stale >= now}
                        if len(self._entries) >= self.max_entries:
                            self._entries.clear()
                    self._entries[provider_id] = (now + self.ttl, value)
                future.set_result(value)
            finally:
                if self._inflight.get(provider_id) is future:
                    del self._inflight[provider_id]

        self._tasks.add(task := asyncio.get_running_loop().create_task(refresh()))
        task.add_done_callback(self._tasks.discard)
        return future

    _tasks: set = set()  # keeps background refreshes referenced until they finish

    def drop(self, provider_id: str) -> None:
        """Forget the provider's entry, and the answer of any refresh still running (it may have read the
        database before the change that calls this): the next read computes afresh."""
        self._entries.pop(provider_id, None)
        self._inflight.pop(provider_id, None)
        if self.held is not None:
            self.held.drop(provider_id)


class HeldEvidence:
    """The verdict records a trust answer was computed from, per provider, under the version of the provider's
    evidence they were read at (`TrustCache.held` of the gateway's trust cache), so that computing the answer
    again (a refresh of a read entry every `ttl` while it is read, or a miss) reads one row instead of every
    verdict when nothing changed: the score is a function of the records and the time, and only the time
    moved.

    The version is the provider's provider_scores row, which the transaction adding evidence rewrites
    (gateway.service.evidence_changed), so another replica's verdict shows as a new version too. It holds
    the number of records (`evidence`), and evidence is only ever added (a judged challenge, a judged segment,
    a closed run: none is changed or deleted afterwards), so every change makes a new version even when two
    commits write the same `computed_at` (one sweep's). Records read after their version (a database whose
    reads see each statement's own commits) are at least as new as it: held under the older version, the
    next read sees the newer one and reads them again. At most `max_records` are held in all (a provider with
    none counts as one): past that, all are forgotten (each provider's come back with its next read); a
    provider with more than that is not held.
    """

    def __init__(self, max_records: int = 100_000) -> None:
        self.max_records = max_records
        self._held: dict[str, tuple[tuple, list]] = {}
        self._records = 0
        self._lock = threading.Lock()  # computations run on several threads

    def get(self, provider_id: str, version: tuple) -> list | None:
        """The records held for the provider at exactly `version`, else None."""
        held = self._held.get(provider_id)
        return held[1] if held is not None and held[0] == version else None

    def put(self, provider_id: str, version: tuple, records: list) -> None:
        size = max(1, len(records))
        if size > self.max_records:
            return
        with self._lock:
            self._forget(provider_id)
            if self._records + size > self.max_records:
                self._held.clear()
                self._records = 0
            self._held[provider_id] = (version, records)
            self._records += size

    def drop(self, provider_id: str) -> None:
        with self._lock:
            self._forget(provider_id)

    def _forget(self, provider_id: str) -> None:
        old = self._held.pop(provider_id, None)
        if old is not None:
            self._records -= max(1, len(old[1]))
