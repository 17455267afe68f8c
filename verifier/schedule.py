"""When the verifier challenges a provider (docs/protocol.md, "Scheduled rounds").

The verifier, not the provider, decides when: a provider's challenges come in **rounds** at unannounced
random times, and a round challenges every device of the provider at the same instant, each with its own
seed. One card registered as several devices must then answer several challenges at once, each sized for
a whole card, and is slower on all but one of them. The gaps between rounds are a minimum gap plus an
exponential draw (a Poisson process shifted by the gap): knowing when the last round came says nothing
about when the next one comes, beyond the gap. While the provider has a job open, rounds come more
often. A device that does not pick its challenge up within the start window has missed it.

Pure: a clock value and a uniform draw in, a time out; the gateway stores it (devices.next_due_at).
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from gpuproof.kernels.errors import InvalidParameter


def _uniform() -> float:
    """Uniform in [0, 1) from the operating system's CSPRNG (53 bits): providers cannot predict it."""
    return secrets.randbits(53) / (1 << 53)


@dataclass(frozen=True)
class SchedulePolicy:
    """mean_interval_s: the mean time between rounds of an idle provider; job_mean_interval_s: the mean while
    one of its jobs is open (the smaller of the two applies); min_gap_s: no two rounds closer than this (by
    default a tenth of the mean); start_window_s: how long a device has to pick its challenge up."""

    mean_interval_s: float = 3600.0
    job_mean_interval_s: float = 600.0
    min_gap_s: float | None = None
    start_window_s: float = 5.0

    def __post_init__(self) -> None:
        for name in ("mean_interval_s", "job_mean_interval_s", "start_window_s"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise InvalidParameter(name, f"must be a positive number of seconds, got {value!r}")
        if self.min_gap_s is not None and not (0 <= self.min_gap_s < min(self.mean_interval_s,
                                                                       self.job_mean_interval_s)):
            raise InvalidParameter("min_gap_s", f"must be in [0, the mean interval), got {self.min_gap_s!r}")

    def mean(self, job_open: bool) -> float:
        """The mean gap between rounds."""
        return min(self.mean_interval_s, self.job_mean_interval_s) if job_open else self.mean_interval_s

    def gap(self, job_open: bool) -> float:
        """The minimum gap between rounds."""
        return self.mean(job_open) / 10 if self.min_gap_s is None else min(self.min_gap_s, self.mean(job_open) / 2)


def next_round_at(now: float, job_open: bool, policy: SchedulePolicy,
                  uniform: Callable[[], float] = _uniform) -> float:
    """The time of the provider's next round after one at `now`: now + gap + Exp(mean - gap)."""
    gap, mean = policy.gap(job_open), policy.mean(job_open)
    u = uniform()
    if not 0 <= u < 1:
        raise InvalidParameter("uniform", f"must draw from [0, 1), drew {u!r}")
    return float(now) + gap - (mean - gap) * math.log1p(-u)


def sooner_for_a_job(current_at: float, now: float, policy: SchedulePolicy,
                     uniform: Callable[[], float] = _uniform) -> float:
    """When a job opens: the next round comes at the earlier of the one already drawn and a fresh draw at
    the job's rate (memorylessness makes the fresh draw from `now` a valid continuation)."""
    return min(current_at, float(now) - policy.mean(True) * math.log1p(-uniform()))


def missed_start(issued_at: float, delivered_at: float | None, now: float, policy: SchedulePolicy) -> bool:
    """Whether a challenge was not picked up within the start window (and so counts as missed)."""
    return delivered_at is None and now - issued_at > policy.start_window_s
