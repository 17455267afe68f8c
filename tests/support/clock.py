"""A clock that moves only when the test moves it: rate-limit tests then hold on any machine speed."""

from __future__ import annotations


class ManualClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def stopped_limiter(app) -> ManualClock:  # noqa: ANN001 - a gateway FastAPI app
    """Give the app's rate limiter a stopped clock; the test advances it."""
    from gpuproof.gateway.limits import RateLimiter

    clock = ManualClock()
    app.state.gp.limiter = RateLimiter(clock=clock)
    return clock
