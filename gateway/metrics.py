"""Prometheus metrics. Never a provider id as a label (unbounded cardinality, and it would leak who)."""

from __future__ import annotations

import bisect

from prometheus_client import CollectorRegistry, Counter, Histogram

REGISTRY = CollectorRegistry()
CHALLENGES_ISSUED = Counter("gpuproof_challenges_issued_total", "Challenges issued", registry=REGISTRY)
CHALLENGES_DEFERRED = Counter("gpuproof_challenges_deferred_total", "Polls answered 204 because the gateway "
                              "was overloaded (settings.admission_backlog)", registry=REGISTRY)
VERDICTS = Counter("gpuproof_verdicts_total", "Verdicts by outcome, timing class and failure reason",
                   ["outcome", "timing", "reason"], registry=REGISTRY)
VERIFY_SECONDS = Histogram("gpuproof_verification_seconds", "Time to check one challenge's openings",
                           registry=REGISTRY, buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5))
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1, 5)
REQUEST_SECONDS = Histogram("gpuproof_request_seconds", "Request latency by route template",
                            ["route", "method", "status"], registry=REGISTRY, buckets=REQUEST_BUCKETS)


class Tally:
    """Observations of one REQUEST_SECONDS series counted in plain lists by code on the event loop (the trust
    fast path: a prometheus observe takes two locked increments, a tenth of that path's cost), added to the
    histogram when /metrics is read (`flush`, on the event loop too, so nothing is counted twice or lost)."""

    def __init__(self, **labels: str) -> None:
        self.child = REQUEST_SECONDS.labels(**labels)
        self.counts = [0] * (len(REQUEST_BUCKETS) + 1)  # the last: above every bound (+Inf)
        self.total = 0.0

    @classmethod
    def of(cls, **labels: str) -> Tally:
        """The one Tally of a series (every gateway app in the process shares it, as the histogram is shared)."""
        key = tuple(sorted(labels.items()))
        if key not in TALLIES:
            TALLIES[key] = cls(**labels)
        return TALLIES[key]

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(REQUEST_BUCKETS, seconds)] += 1
        self.total += seconds

    def flush(self) -> None:
        counts, total = self.counts, self.total
        self.counts, self.total = [0] * len(counts), 0.0
        for i, n in enumerate(counts):  # the histogram's own buckets (prometheus_client keeps one per bound)
            if n:
                self.child._buckets[i].inc(n)
        if any(counts):
            self.child._sum.inc(total)


TALLIES: dict[tuple, Tally] = {}


def flush() -> None:
    """Add every Tally's observations to the histogram: before /metrics is written."""
    for tally in list(TALLIES.values()):
        tally.flush()
SWEPT = Counter("gpuproof_swept_total", "What the maintenance sweep did: challenge timeouts and audit timeouts "
                "judged, request nonces, round-trip probes and stale partial uploads deleted", ["what"],
                registry=REGISTRY)
RATE_LIMIT_FALLBACKS = Counter("gpuproof_rate_limit_fallbacks_total", "Rate-limit decisions taken by this "
                               "process alone because Redis (GPUPROOF_REDIS_URL) was unreachable", registry=REGISTRY)
BLOB_QUOTA_REFUSALS = Counter("gpuproof_blob_quota_refusals_total", "Checkpoint uploads refused (507) because "
                              "the upload store was at its quota", registry=REGISTRY)
WEBHOOK_ATTEMPTS = Counter("gpuproof_webhook_attempts_total", "Webhook delivery attempts by result: delivered, "
                           "retry (to be tried again) or failed (out of attempts)", ["result"], registry=REGISTRY)
DATABASE_UNAVAILABLE = Counter("gpuproof_database_unavailable_total", "Requests answered 503 because the database "
                               "could not be reached or dropped the connection (gateway/problems.py)",
                               registry=REGISTRY)
