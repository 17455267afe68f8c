"""Rate limits shared by every gateway replica, in Redis (GPUPROOF_REDIS_URL; the `redis` extra).

Without a Redis URL each process keeps its own token buckets (gateway.deps.RateLimiter), so N replicas
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

import logging
import threading
import time
from collections.abc import Callable

from gpuproof.gateway import metrics
from gpuproof.gateway.deps import RateLimiter
from gpuproof.kernels.errors import InvalidParameter

log = logging.getLogger("gpuproof.gateway")

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
    `take` as gateway.deps.RateLimiter. `clock` (tests) replaces the Redis server's clock."""

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
