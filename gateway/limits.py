"""Rate limits shared by every gateway replica, in Redis (GPUPROOF_REDIS_URL; the `redis` extra).

Without a Redis URL each process keeps its own token buckets (`RateLimiter`), so N replicas
allow N times the rate. With one, every replica takes its tokens from the same bucket per key (a provider
id or a client address): one Lua script (EVALSHA) refills and takes atomically on the Redis server, timed
by the server's own clock (TIME), so replicas' clocks do not matter. A bucket's key expires when it would
be full again: a missing key means a full bucket, so expiry changes no answer and Redis holds only the
buckets of keys seen within their refill time.

If Redis cannot be reached (connection refused, or no answer within `timeout_s`) the replica falls back to
its own in-process buckets for `retry_s` and then tries Redis again: limits loosen to per replica, they
never fail closed (a Redis outage must not refuse every provider) and a dead Redis costs a request at most
one timeout per `retry_s`. Each fallback is counted in gpuproof_rate_limit_fallbacks_total and logged.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

import anyio.lowlevel
import anyio.to_thread
from fastapi import Request
from gpuproof.gateway import metrics
from gpuproof.gateway.problems import Problem
from gpuproof.gateway.sessions import threads_of_their_own
from gpuproof.gateway.state import State, StateDep
from gpuproof.kernels.errors import InvalidParameter

log = logging.getLogger("gpuproof.gateway")

class Limiter(Protocol):
    """Token buckets per key: RateLimiter (this process) or gateway.limits.RedisRateLimiter (shared).
    `blocking`: a take waits on the network, so code on the event loop asks it from a thread
    (`ip_limited_off_loop`)."""

    blocking: bool

    def take(self, key: str, rate: float, burst: float) -> float | None: ...


class RateLimiter:
    """Token buckets per key (provider id or client IP), in this process: a flood is cut at the door.

    `clock` is the time source in seconds (monotonic by default; tests pass a controlled one).
    At most `max_keys` buckets are kept: beyond that the buckets that are full again are forgotten
    (a forgotten key gets a full bucket back, so it gains nothing), then, if more than three quarters are
    live, the live ones that will be full soonest until half are left (to reset one busy key that way takes
    max_keys / 4 requests from other keys; and a pass over the buckets is followed by at least max_keys / 4
    new keys before the next, so a flood of fresh keys costs O(1) a request).
    """

    blocking = False  # a take is a few dict operations under a lock

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000) -> None:
        self._buckets: dict[str, tuple[float, float, float]] = {}  # tokens, last, full again at
        self._lock = threading.Lock()
        self._clock = clock
        self._max_keys = max_keys

    def take(self, key: str, rate: float, burst: float) -> float | None:
        """None if allowed, else the seconds to wait."""
        now = self._clock()
        self._lock.acquire()  # (not `with`: half the cost, and this runs on every request)
        try:
            tokens, last, _ = self._buckets.get(key, (burst, now, now))
            tokens = min(burst, tokens + (now - last) * rate)
            allowed = tokens >= 1
            left = tokens - 1 if allowed else tokens
            self._buckets[key] = (left, now, now + (burst - left) / rate)
            if len(self._buckets) > self._max_keys:
                self._forget(now)
        finally:
            self._lock.release()
        return None if allowed else (1 - tokens) / rate

    def _forget(self, now: float) -> None:
        """Drop the buckets that are full again by now (those keys lose nothing); if more than three quarters
        of the bound are still live, the ones full again soonest go too, down to half."""
        self._buckets = {k: bucket for k, bucket in self._buckets.items() if bucket[2] > now}
        if len(self._buckets) > self._max_keys * 3 // 4:
            soonest = sorted(self._buckets, key=lambda k: self._buckets[k][2])
            for key in soonest[: len(self._buckets) - self._max_keys // 2]:
                del self._buckets[key]


def source_of(request: Request) -> str:
    """The address a request came from, as the per-address limits and the per-source shares count it
    (source_of_host)."""
    return source_of_host(request.client.host if request.client else "unknown")


@functools.lru_cache(maxsize=65_536)  # parsed once per address: it runs on every request, the trust fast path's too
def source_of_host(host: str) -> str:
    """A client address as the limits count it: the IPv4 address (an IPv4-mapped IPv6 one as IPv4), or the
    /64 of an IPv6 one (a single IPv6 host usually holds a whole /64, and would otherwise rotate through it)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host[:64]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


@functools.lru_cache(maxsize=65_536)
def ip_key(host: str) -> str:
    """The per-address bucket of a client address (source_of_host), made once per address."""
    return f"ip:{source_of_host(host)}"


def ip_limited(state: State, ip: str) -> Problem | None:
    """Take one token from the client address's bucket (settings.ip_rate_per_s, a burst of two seconds'
    worth): None when there was one, else the 429 to answer with its Retry-After."""
    rate = state.settings.ip_rate_per_s
    wait = state.limiter.take(ip_key(ip), rate, 2 * rate)
    return None if wait is None else too_many_from(state, wait)


def too_many_from(state: State, wait: float) -> Problem:
    """The 429 of an address that has no token left for `wait` seconds."""
    return Problem(429, "Too many requests", f"more than {state.settings.ip_rate_per_s:g} requests/s from "
                   "this address", retry_after=max(1, round(wait + 0.5)))


_LIMIT_THREADS: anyio.lowlevel.RunVar[anyio.CapacityLimiter] = anyio.lowlevel.RunVar("gpuproof_limit_threads")
LIMIT_THREADS = 8  # a blocking limiter's takes in flight at once, per event loop


async def ip_limited_off_loop(state: State, ip: str) -> Problem | None:
    """`ip_limited` for code on the event loop: at once with this process's buckets; on threads of its own
    with a limiter that waits on the network (Redis: a round trip per request, up to its 0.25 s timeout when
    Redis is slow, would otherwise stop every request the loop serves meanwhile)."""
    if not state.limiter.blocking:
        return ip_limited(state, ip)
    return await anyio.to_thread.run_sync(ip_limited, state, ip,
                                          limiter=threads_of_their_own(_LIMIT_THREADS, None, LIMIT_THREADS))


async def limit_ip(request: Request, state: StateDep) -> None:
    problem = await ip_limited_off_loop(state, request.client.host if request.client else "unknown")
    if problem is not None:
        raise problem


# KEYS[1] the bucket; ARGV rate (tokens/s), burst, now (seconds; "" = the server's clock).
# The bucket is a hash {tokens, at}; answers "" when a token was taken, else the seconds to wait.
TOKEN_BUCKET = """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local now = tonumber(ARGV[3])
if now == nil then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local saved = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(saved[1]), tonumber(saved[2])
if tokens == nil or at == nil then tokens, at = burst, now end
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = ''
if tokens >= 1 then tokens = tokens - 1 else wait = string.format('%.6f', (1 - tokens) / rate) end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens), 'at', string.format('%.6f', now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
return wait
"""


class RedisRateLimiter:
    """Token buckets per key in Redis, shared by every process that uses the same URL and prefix; the same
    `take` as RateLimiter. `clock` (tests) replaces the Redis server's clock."""

    blocking = True  # each take is a round trip to Redis

    def __init__(self, url: str, prefix: str = "gpuproof:", *, timeout_s: float = 0.25, retry_s: float = 5.0,
                 clock: Callable[[], float] | None = None, fallback: RateLimiter | None = None) -> None:
        try:
            import redis
        except ImportError:
            raise InvalidParameter("GPUPROOF_REDIS_URL", "shared rate limits need the redis client, which is "
                                   "not installed: pip install 'gpuproof[redis]'") from None
        self.client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                                           health_check_interval=30)
        self._script = self.client.register_script(TOKEN_BUCKET)  # EVALSHA, EVAL once on NOSCRIPT
        self._errors = (redis.RedisError, OSError)
        self.prefix, self.retry_s, self._clock = f"{prefix}rl:", retry_s, clock
        self.fallback = fallback or RateLimiter()
        self._down_until = 0.0
        self._lock = threading.Lock()

    def take(self, key: str, rate: float, burst: float) -> float | None:
        """None if allowed, else the seconds to wait (from the shared bucket; from this process's own
        while Redis is unreachable)."""
        if time.monotonic() < self._down_until:
            metrics.RATE_LIMIT_FALLBACKS.inc()
            return self.fallback.take(key, rate, burst)
        now = "" if self._clock is None else repr(self._clock())
        try:
            wait = self._script(keys=[self.prefix + key], args=[repr(float(rate)), repr(float(burst)), now])
        except self._errors as exc:
            with self._lock:
                if time.monotonic() >= self._down_until:
                    self._down_until = time.monotonic() + self.retry_s
                    log.error("rate limits: Redis unreachable (%s: %s); this replica limits on its own for "
                              "%.0f s", type(exc).__name__, exc, self.retry_s)
            metrics.RATE_LIMIT_FALLBACKS.inc()
            return self.fallback.take(key, rate, burst)
        return float(wait) if wait else None

    def check(self) -> None:
        """Raise if Redis cannot be reached."""
        self.client.ping()

    def close(self) -> None:
        self.client.close()
