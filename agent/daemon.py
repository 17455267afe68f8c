"""The provider daemon: poll, prove, commit, open, with retries that never double-submit.

One worker thread per claimed device. A worker first warms its backend up (kernels compiled and loaded,
library handles, buffers for the shape its profile is challenged at, one untimed round: `warm_up` in
kernels/backend.py), so that no challenge is timed cold. Then it polls with jittered backoff; for a
challenge it echoes the round-trip probe at once on a thread of its own (so the echo's round trip is
not on the timed path), computes the roots, commits, computes the openings and posts them. Network
errors, 5xx and 429 are retried with exponential backoff (tenacity) for as long as the challenge can
still count; a retry resends byte-identical content, which the gateway
answers with the response it gave the first time, so nothing is ever counted twice. If the gateway
restarts mid-challenge, the worker keeps retrying until it is back; if the agent restarts, the next
poll returns the open challenge and the worker recomputes and resubmits the same roots. SIGTERM/SIGINT
stop every worker cleanly.

Between challenges a device is idle, with a long poll open (`wait_s`): the verifier challenges all of a
provider's devices at once, at unannounced random times (verifier/schedule.py: on average once per
`challenge_interval_s`, an hour by default, more often while a job is open; the first round at once
after registering), and times each challenge from that instant, so the agent must be listening when it
comes. The live table shows the mean interval (never a time: there is none to show), and an `idle` event
says it whenever it changes.
"""

from __future__ import annotations

import contextlib
import json
import random
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gpuproof.agent.config import DeviceSpec
from gpuproof.client import GatewayClient, GatewayError, GatewayUnreachable
from gpuproof.kernels.backend import Backend, Opening, Shape
from gpuproof.kernels.memory import MemoryPlan, run_with_table, walk_key
from gpuproof.kernels.spec import SPECS
from gpuproof.verifier.outcome import Outcome
from gpuproof.verifier.wire import ChallengeOut
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_delay, stop_any
from tenacity.stop import stop_base
from tenacity.wait import wait_base, wait_random, wait_random_exponential


class _StopOn(stop_base):
    """Stop retrying once the daemon is told to stop."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, retry_state: object) -> bool:
        return self.event.is_set()


DEVICE_ERROR_WAIT_S = 30.0  # after a failed challenge, before polling again
ECHOES_PER_DEVICE = 4  # round-trip echoes in flight at once per device, at most (Daemon._echo)
LONG_POLL_S = 25.0  # how long one poll waits for a challenge (the gateway caps it at its long_poll_max_s)


def _describe(exc: BaseException) -> str:
    """One line naming an error: its type and message, bounded."""
    text = " ".join(str(exc).split()) or "(no message)"
    return f"{type(exc).__name__}: {text}"[:500]


def profile_shapes(device: DeviceSpec) -> list[Shape]:
    """The (m, n, k) the gateway sizes this device's challenges at: its claimed model's profile
    (verifier.timing.challenge_shape). A gateway run with a test shape (GPUPROOF_VERIFY_TEST_SHAPE) sizes
    them otherwise, which the agent learns only from its first challenge; that one challenge then pays
    its shape's buffer allocation (every other one-time cost is paid by the warm-up all the same)."""
    from gpuproof.verifier.profiles import lookup
    from gpuproof.verifier.timing import challenge_shape

    return [challenge_shape(lookup(device.model))]


def retryable(exc: BaseException) -> bool:
    """Worth retrying: the gateway unreachable, a 5xx, or a rate limit."""
    return isinstance(exc, GatewayUnreachable) or (isinstance(exc, GatewayError) and
                                                   (exc.status >= 500 or exc.status == 429))


MAX_PATIENCE = 8.0  # a retry waits for the gateway at most this many times the client's timeout,
MAX_RETRY_TIMEOUT_S = 60.0  # and no longer than this (or the client's own timeout, if longer): the limit and a
# stop are seen between tries only


def patience(client: GatewayClient, attempt: int) -> float:
    """How many times its usual timeout the `attempt`th try (from 1) waits for the gateway."""
    cap = min(MAX_PATIENCE, max(1.0, MAX_RETRY_TIMEOUT_S / client.timeout_s))
    return min(2.0 ** (attempt - 1), cap)


class Backoff(wait_base):
    """Exponential backoff with jitter after an error the gateway answered or a refused connection (it is
    busy or down: let it be), but only a short jitter after a timeout, which has already waited its (growing)
    timeout: backing off on top of it spent an honest provider's deadline in waits (a challenge's openings
    sat out 7 s between two tries under packet loss and arrived 0.1 s past the deadline)."""

    def __init__(self, multiplier: float, max_s: float) -> None:
        self.exponential = wait_random_exponential(multiplier=multiplier, max=max_s)
        self.jitter = wait_random(0, multiplier)

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        timed_out = isinstance(exc, GatewayUnreachable) and exc.timed_out
        return (self.jitter if timed_out else self.exponential)(retry_state)


def with_retries(client: GatewayClient, fn: Callable[[], Any], *, limit_s: float, wait_multiplier: float,
                 wait_max_s: float, stop: threading.Event | None = None,
                 on_retry: Callable[[int], None] | None = None) -> Any:
    """fn() retried on retryable errors (exponential backoff with jitter) until it succeeds, `limit_s` passes,
    or `stop` is set (then None). Each retry waits twice as long for the gateway as the one before, up to
    MAX_PATIENCE times the client's timeout and MAX_RETRY_TIMEOUT_S (`patience`): under packet loss a body's
    retransmissions take longer than a short first timeout, and retrying with the same timeout only fails
    the same way (tests/reliability/test_netfaults.py: at 30 % loss and a 0.5 s timeout an opening of 32
    rows was retried 13 times, never through, until the challenge expired). Between tries: `Backoff`."""
    stops = stop_after_delay(limit_s) if stop is None else stop_any(stop_after_delay(limit_s), _StopOn(stop))
    for attempt in Retrying(retry=retry_if_exception(retryable), reraise=True, stop=stops,
                            wait=Backoff(wait_multiplier, wait_max_s)):
        number = attempt.retry_state.attempt_number
        with attempt, client.patience(patience(client, number)):
            if number > 1 and on_retry is not None:
                on_retry(number)
            return fn()
    return None


@dataclass
class DeviceStatus:
    position: int
    model: str
    state: str = "starting"
    challenges: int = 0
    passed: int = 0
    last_verdict: str = ""
    last_reason: str = ""
    mean_interval_s: float | None = None  # the gateway's mean gap between rounds (their times are unannounced)

    def describe_state(self, now: float) -> str:
        """The state as the live table shows it: "idle" says how often challenges come, on average."""
        if self.state == "idle" and self.mean_interval_s is not None:
            return f"idle: listening; challenges come unannounced, {interval_text(self.mean_interval_s)}"
        return self.state


def interval_text(seconds: float) -> str:
    """A mean interval in words: "about every 57 min", "about every 1 h 05 min", "about every 40 s"."""
    if seconds < 90:
        return f"about every {seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"about every {minutes} min" if minutes < 60 else f"about every {minutes // 60} h {minutes % 60:02d} min"


@dataclass
class Daemon:
    client: GatewayClient
    devices: list[DeviceSpec]
    backend_for: Callable[[DeviceSpec], Backend]
    poll_max_s: float = 60.0
    max_challenges: int | None = None
    emit: Callable[[dict[str, Any]], None] = field(default=lambda event: print(json.dumps(event), flush=True))
    stop: threading.Event = field(default_factory=threading.Event)
    retry_limit_s: float = 600.0
    warm_shapes: Callable[[DeviceSpec], list[Shape]] = profile_shapes

    def __post_init__(self) -> None:
        self.status = [DeviceStatus(i, d.model) for i, d in enumerate(self.devices)]
        self._done = 0
        self._lock = threading.Lock()
        self._echoes = threading.BoundedSemaphore(ECHOES_PER_DEVICE * (len(self.devices) or 1))  # (_echo)

    def _event(self, kind: str, **fields: Any) -> None:
        self.emit({"at": round(time.time(), 3), "event": kind, **fields})

    def _sleep(self, seconds: float) -> None:
        self.stop.wait(max(0.0, seconds))

    def _retrying(self, what: str, fn: Callable[[], Any]) -> Any:
        """fn() retried (with_retries) until it succeeds, the retry limit passes, or we stop (None)."""
        return with_retries(self.client, fn, limit_s=self.retry_limit_s, wait_multiplier=0.5, wait_max_s=10,
                            stop=self.stop, on_retry=lambda n: self._event("retry", what=what, attempt=n))

    def run(self) -> None:
        """Run one worker per device until stopped (or until max_challenges are judged)."""
        threads = [threading.Thread(target=self._worker, args=(i,), name=f"gpuproof-device-{i}", daemon=True)
                   for i in range(len(self.devices))]
        for t in threads:
            t.start()
        for t, status in zip(threads, self.status, strict=True):
            while t.is_alive():
                if self.stop.is_set() and status.state in ("idle", "polling", "waiting"):
                    break  # a long poll in flight holds nothing: do not wait for it to run out
                t.join(timeout=0.2)
        self._event("stopped", judged=self._done)

    def _worker(self, position: int) -> None:
        status = self.status[position]
        try:
            backend = self.backend_for(self.devices[position])
        except Exception as exc:  # this device cannot start (no CuPy, no such GPU): say why, others go on
            status.state = "unavailable"
            self._event("device-unavailable", device=position, error=_describe(exc))
            return
        self._warm_up(position, backend)
        backoff = 1.0
        while not self.stop.is_set():
            try:
                status.state = "polling" if status.state != "idle" else "idle"
                asked = time.monotonic()
                poll = self.client.poll(position, wait_s=LONG_POLL_S)
                challenge, probe, retry_after = poll.challenge, poll.probe, poll.retry_after_s
                if challenge is not None:  # held from here on: a stop now waits for it to be answered (run)
                    status.state = f"received {challenge.challenge_id[:8]}"
                if probe:  # echoed beside the proving, not before it: the echo's round trip is not timed
                    self._echo(probe)
                backoff = 1.0
                if challenge is None:
                    status.state = "idle"
                    self._idle(position, poll.mean_interval_s)
                    if time.monotonic() - asked < LONG_POLL_S / 2:  # not a long poll that ran out: deferred by
                        # a busy gateway, or one that does not wait; ask again when it says
                        wait = min(self.poll_max_s, retry_after or self.poll_max_s)
                        self._sleep(wait * random.uniform(0.8, 1.0))
                    continue
                self._challenge(position, backend, challenge)
            except GatewayError as exc:
                status.state = "waiting"
                wait = min(self.poll_max_s, backoff) if retryable(exc) else self.poll_max_s
                backoff = min(self.poll_max_s, backoff * 2)
                self._event("gateway-error", device=position, status=exc.status, detail=exc.detail, retry_in=wait)
                self._sleep(wait * random.uniform(0.8, 1.2))
            except Exception as exc:  # the device or the challenge failed (out of memory, a CUDA error, a
                # challenge this agent cannot take): report it and keep serving; the gateway times it out
                status.state = "device error"
                wait = min(self.poll_max_s, DEVICE_ERROR_WAIT_S)
                self._event("device-error", device=position, error=_describe(exc), retry_in=wait)
                self._sleep(wait)
            with self._lock:
                if self.max_challenges is not None and self._done >= self.max_challenges:
                    self.stop.set()

    def _echo(self, probe: str) -> None:
        """Echo the round-trip probe of the last poll on a thread of its own, at once, and return.

        The gateway times a challenge from its issue, so anything the worker does before proving is
        charged to the provider; echoing first put one more round trip on that path, beyond what the RTT
        allowance covers. The gateway times the echo itself (from the poll's answer to the echo's
        arrival), so sending it beside the proving keeps the measurement and takes it off the challenge's
        path. A lost echo only costs the RTT allowance its sample. At most ECHOES_PER_DEVICE echoes per device
        are in flight: a gateway that stalls echoes gets no more threads out of the agent, only fewer samples
        (one per device was too few: the next challenge's probe often came while the last echo was still on
        the wire, and that challenge got no allowance)."""
        if not self._echoes.acquire(blocking=False):
            return

        def echo() -> None:
            try:
                with contextlib.suppress(GatewayError):
                    self.client.echo_rtt(probe)
            finally:
                self._echoes.release()

        threading.Thread(target=echo, name="gpuproof-rtt-echo", daemon=True).start()

    def _warm_up(self, position: int, backend: Backend) -> None:
        """Warm the backend up on this worker's thread before its first poll, so that no timed challenge
        pays compilation, handles or allocation. A failure is reported and the worker serves anyway: the
        challenge will say whether the device can run at all."""
        status = self.status[position]
        status.state = "warming up"
        shapes = self.warm_shapes(self.devices[position])
        started = time.perf_counter()
        try:
            backend.warm_up(shapes)
        except Exception as exc:
            self._event("device-error", device=position, error=_describe(exc), during="warm-up")
            return
        self._event("warmed-up", device=position, shapes=[list(s) for s in shapes],
                    seconds=round(time.perf_counter() - started, 3))

    def _idle(self, position: int, mean_interval_s: float | None) -> None:
        """Note how often the gateway challenges, on average; say so (event `idle`) when that changes."""
        status = self.status[position]
        if mean_interval_s is not None and mean_interval_s != status.mean_interval_s:
            self._event("idle", device=position, mean_interval_s=mean_interval_s)
            status.mean_interval_s = mean_interval_s

    def _memory_phase(self, position: int, cid: str, prover: Any, params, roots: list[bytes],  # noqa: ANN001
                      nonce_hex: str | None) -> list[dict] | None:
        """Spec v2's memory phase: walk at once from the nonce, commit the walk root (timed by the gateway),
        then open the lanes it drew, in its order. None when the gateway could not be reached in time."""
        self.status[position].state = f"walking {cid[:8]}"
        wk = _walk_key(params, roots, nonce_hex)
        walk_root = prover.run_walk(wk)
        request = self._retrying("walk", lambda: self.client.commit_walk(cid, walk_root))
        if request is None:
            return None
        return [prover.open(lane, wk).to_json() for lane in request.lanes]

    def _challenge(self, position: int, backend: Backend, c: ChallengeOut) -> None:
        status = self.status[position]
        cid = c.challenge_id
        if c.spec not in SPECS:  # never guess at another spec's bytes: say so, let it time out
            status.state = "unsupported spec"
            self._event("unsupported-spec", device=position, challenge_id=cid, spec=c.spec, supported=list(SPECS))
            self._sleep(self.poll_max_s)
            return
        params = c.params()  # whichever spec it names
        status.state = f"proving {cid[:8]}"
        self._event("challenge", device=position, challenge_id=cid, m=params.m, n=params.n, k=params.k,
                    rounds=params.rounds, resumed=c.state != "issued")
        started = time.perf_counter()
        prover = None
        if c.memory is None:
            roots = backend.run(params)
        else:  # spec v2's memory phase: the table is kept as the rounds come, before committing, so that only
            # the walk runs between the nonce and the walk root (the part the gateway times)
            plan = MemoryPlan(params, c.memory.table_rounds, c.memory.lanes, c.memory.steps, c.memory.opened)
            roots, prover = run_with_table(backend, plan)
        seconds = time.perf_counter() - started
        status.state = f"committing {cid[:8]}"
        request = self._retrying("commitment", lambda: self.client.commit(cid, roots))
        if request is None:
            return
        lanes = None
        if prover is not None:
            lanes = self._memory_phase(position, cid, prover, params, roots, request.walk_nonce)
            if lanes is None:
                return
        status.state = f"opening {cid[:8]}"
        openings = []
        for r, i in sorted(set(request.pairs)):
            values, path = backend.open(params, r, i, roots)
            openings.append(Opening(r, i, values, tuple(path)).to_json())
        verdict = self._retrying("openings", lambda: self.client.open(cid, openings, lanes))
        if verdict is None:
            return
        status.challenges += 1
        status.passed += verdict.outcome == Outcome.PASS
        status.last_verdict = f"{verdict.outcome} ({verdict.timing})"
        status.last_reason = verdict.reasons[0] if verdict.reasons else ""
        status.state = "judged"
        with self._lock:
            self._done += 1
        self._event("verdict", device=position, challenge_id=cid, outcome=str(verdict.outcome),
                    timing=str(verdict.timing), prove_seconds=round(seconds, 3),
                    measured_s=verdict.measured_s, reason=status.last_reason)


def _walk_key(params, roots: list[bytes], nonce_hex: str | None) -> bytes:  # noqa: ANN001
    if nonce_hex is None:
        raise GatewayError(502, {"title": "Unexpected answer", "detail": "the opening request of a challenge "
                                 "with a memory phase carries no walk nonce"})
    return walk_key(params.seed, roots[-1], bytes.fromhex(nonce_hex))


def json_emitter(stream=sys.stdout) -> Callable[[dict[str, Any]], None]:  # noqa: ANN001
    def emit(event: dict[str, Any]) -> None:
        stream.write(json.dumps(event) + "\n")
        stream.flush()

    return emit
