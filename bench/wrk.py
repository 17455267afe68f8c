"""Reading wrk's report (requests/s, p99 latency, non-2xx count), shared by the gateway benchmarks."""

from __future__ import annotations

import re
from typing import NamedTuple

_UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


class WrkResult(NamedTuple):
    rps: float
    p99_ms: float
    non_2xx: int


def parse(out: str) -> WrkResult:
    """wrk --latency's stdout as numbers; SystemExit with the report if it lacks what we read."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    if rps is None or p99 is None:
        raise SystemExit(f"wrk's report has no Requests/sec or 99% latency line:\n{out}")
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return WrkResult(float(rps.group(1)), float(p99.group(1)) * _UNIT_MS[p99.group(2)],
                     int(bad.group(1)) if bad else 0)
