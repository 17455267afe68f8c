"""A challenge's lifecycle (docs/protocol.md, "Protocol" and "Scheduled rounds"), as rules over plain data.

    issued --commit--> committed --draw--> (request drawn) --openings--> judged
       \\________________ expiry (deadline + grace, or a missed start) ______/

A challenge with a memory phase (spec v2 on a profiled card) has one step more, between the request and the
openings: the request carries the walk's nonce; `commit_walk` takes the walk root (then `draw_lanes` draws
the lanes to open, once), and openings are taken only after that.

Every rule of when a challenge may move, and what a retry is answered with, is here: the deadline (a
commitment or openings that arrived more than `deadline_s` after issue are refused; exactly at the
deadline is in time), the expiry (a challenge still open `grace_s` after its deadline, or not picked up
within the start window, is judged a timeout), retries recognised by the digest of their content (the
same content is answered with what is on record, other content is refused), and when a provider's next
round is due (verifier/schedule.py draws the times).

Pure: a `ChallengeState` (what the store knows of a challenge) and a clock value `now` in; a new state,
an action for the caller, or a typed error out. The gateway loads rows, holds their locks (so that two
requests never both apply a step), calls these rules, stores what they return, and maps the errors to
HTTP statuses in one table (gateway/problems.py). The verifier's own work on the content (timing a
commitment, drawing rows, checking openings, a timeout verdict) is verifier/protocol.py's.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from gpuproof.kernels.errors import GpuproofError, InvalidParameter
from gpuproof.verifier import schedule
from gpuproof.verifier.schedule import SchedulePolicy

ISSUED, COMMITTED, JUDGED = "issued", "committed", "judged"
STATES = (ISSUED, COMMITTED, JUDGED)
OPEN_STATES = (ISSUED, COMMITTED)

EXPIRY_GRACE_S = 60.0  # the default grace after a deadline before an open challenge is judged a timeout
RTT_SAMPLES = 5  # the round trips the allowance is the minimum of
RTT_HISTORY_S = 3600.0  # round trips older than this are not used (and the maintenance sweep deletes them)
RTT_ECHO_WINDOW_S = 30.0  # a round-trip probe echoed later than this is refused


# Errors ---------------------------------------------------------------------------------------------------
class LifecycleError(GpuproofError):
    """A step the lifecycle refuses; `detail` says what was expected and what came."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class DeadlinePassed(LifecycleError):
    """A commitment or openings arrived after the challenge's deadline."""

    def __init__(self, what: str, elapsed_s: float, deadline_s: float) -> None:
        super().__init__(f"the {what} came {elapsed_s:.3f} s after issue; the deadline was {deadline_s:.3f} s")
        self.what, self.elapsed_s, self.deadline_s = what, elapsed_s, deadline_s


class AlreadyJudged(LifecycleError):
    """The challenge (or audit) has a verdict, reached on other content or a timeout."""


class AlreadyCommitted(LifecycleError):
    """A commitment with other content than the one on record."""


class NotCommitted(LifecycleError):
    """Openings for a challenge with no commitment (or no opening request) yet."""


class WrongState(LifecycleError):
    """A step asked of a challenge in a state that does not allow it (a caller's bug, not a client's)."""

    def __init__(self, step: str, expected: Collection[str], got: str) -> None:
        super().__init__(f"cannot {step}: expected a challenge in state {' or '.join(expected)}, got {got}")


class AlreadyEchoed(LifecycleError):
    """A round-trip probe echoed twice."""


class ProbeExpired(LifecycleError):
    """A round-trip probe echoed after the echo window."""


class AlreadyUploaded(LifecycleError):
    """A segment audit's state upload with other content than the one on record."""


class AlreadyOpened(LifecycleError):
    """A segment audit's openings with other content than the ones on record."""


class NotReady(LifecycleError):
    """A segment audit's replay asked for before the provider's evidence is complete."""


class RunClosed(LifecycleError):
    """A checkpoint commitment for a training run already closed."""


class TooManyCommitments(LifecycleError):
    """More checkpoint commitments than the job's policy allows."""


class TooFewCommitments(LifecycleError):
    """A training run closed with fewer than two commitments (step 0 and one more)."""


# The state ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ChallengeState:
    """What the lifecycle needs to know of one challenge.

    committed: its roots are stored; requested: its opening request was drawn (after the roots were
    stored); commit_digest / openings_digest: the digests (`digest`) of the content on record, by which
    retries are recognised; delivered_at: when its device first got it (None: not yet).
    """

    challenge_id: str
    state: str
    issued_at: float
    deadline_s: float
    delivered_at: float | None = None
    committed: bool = False
    commit_digest: str | None = None
    requested: bool = False
    openings_digest: str | None = None
    judged_at: float | None = None
    memory: bool = False  # it has a memory phase: a walk root and opened lanes come before the verdict
    walk_digest: str | None = None  # the walk root on record (its digest), stored after the request was drawn
    lanes_drawn: bool = False  # the lanes to open were drawn (after the walk root was stored)

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise InvalidParameter("state", f"expected one of {STATES}, got {self.state!r}")
        for name in ("issued_at", "deadline_s"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value):
                raise InvalidParameter(name, f"expected a finite number, got {value!r}")
        if self.deadline_s <= 0:
            raise InvalidParameter("deadline_s", f"expected a positive number of seconds, got {self.deadline_s!r}")
        if self.state == ISSUED and (self.committed or self.requested):
            raise InvalidParameter("state", "an issued challenge has no commitment and no opening request yet")
        if self.requested and not self.committed:
            raise InvalidParameter("requested", "an opening request is drawn only after the commitment is stored")
        if self.walk_digest is not None and not (self.memory and self.requested):
            raise InvalidParameter("walk_digest", "a walk root is stored only for a memory phase, after the request")
        if self.lanes_drawn and self.walk_digest is None:
            raise InvalidParameter("lanes_drawn", "the lanes are drawn only after the walk root is stored")
        if self.openings_digest is not None and self.state != JUDGED:
            raise InvalidParameter("openings_digest", f"openings are on record only once judged, got {self.state}")

    @property
    def deadline_at(self) -> float:
        """The deadline as a clock value."""
        return self.issued_at + self.deadline_s

    @property
    def is_open(self) -> bool:
        """Whether the challenge awaits an answer (not judged yet)."""
        return self.state in OPEN_STATES


def digest(payload: object) -> str:
    """The digest by which a retry is recognised: SHA-256 over the payload's canonical JSON."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _same(a: str | None, b: str) -> bool:
    return a is not None and hmac.compare_digest(a, b)


def check_deadline(ch: ChallengeState, now: float, what: str) -> None:
    """Raise DeadlinePassed unless `now` (the arrival time of `what`) is at most deadline_s after issue."""
    elapsed = now - ch.issued_at
    if elapsed > ch.deadline_s:
        raise DeadlinePassed(what, elapsed, ch.deadline_s)


def _already_judged(ch: ChallengeState) -> AlreadyJudged:
    if ch.openings_digest is None:  # no openings on record: it timed out
        return AlreadyJudged(f"challenge {ch.challenge_id} was judged a timeout (no "
                             f"{'openings' if ch.committed else 'commitment'} before its deadline)")
    return AlreadyJudged(f"challenge {ch.challenge_id} was judged on other openings")


# Transitions ---------------------------------------------------------------------------------------------
def deliver(ch: ChallengeState, now: float) -> ChallengeState:
    """The challenge handed to its device: the first delivery time is kept (it starts no clock: the
    challenge is timed from its issue, the round's instant)."""
    return ch if ch.delivered_at is not None else replace(ch, delivered_at=float(now))


CommitAction = Literal["store", "draw", "replay"]


@dataclass(frozen=True)
class CommitStep:
    """What to do with a commitment: `store` it (then draw), `draw` the opening request of the same
    commitment stored before (the gateway stopped before drawing), or `replay` the request on record.
    `state` is the challenge's state after the step."""

    action: CommitAction
    state: ChallengeState


def commit(ch: ChallengeState, commit_digest: str, now: float) -> CommitStep:
    """A commitment (whose content has digest `commit_digest`) that arrived at `now`.

    A retry with the same content is answered with what is on record, even after the deadline (it is
    not a new commitment); other content once a commitment is stored is AlreadyCommitted; a challenge
    judged before any commitment is AlreadyJudged; a judged challenge whose request was never drawn
    (a timeout) draws none. A new commitment must arrive by the deadline (DeadlinePassed).
    """
    if ch.state != ISSUED:
        if ch.state == JUDGED and ch.commit_digest is None:
            raise _already_judged(ch)
        if not _same(ch.commit_digest, commit_digest):
            raise AlreadyCommitted(f"challenge {ch.challenge_id} is {ch.state} with other roots")
        if ch.requested:
            return CommitStep("replay", ch)
        if ch.state == JUDGED:
            raise _already_judged(ch)
        return CommitStep("draw", ch)
    check_deadline(ch, now, "commitment")
    return CommitStep("store", replace(ch, state=COMMITTED, committed=True, commit_digest=commit_digest))


def draw(ch: ChallengeState) -> ChallengeState | None:
    """The opening request is drawn once, only after the commitment is stored: the state with the request
    drawn, or None when one was drawn already (answer with it)."""
    if ch.requested:
        return None
    if ch.state != COMMITTED:
        raise WrongState("draw an opening request", (COMMITTED,), ch.state)
    return replace(ch, requested=True)


WalkAction = Literal["store", "draw", "replay"]


@dataclass(frozen=True)
class WalkStep:
    """What to do with a walk root: `store` it (then draw the lanes), `draw` the lanes of the same walk root
    stored before (the gateway stopped before drawing), or `replay` the lanes on record."""

    action: WalkAction
    state: ChallengeState


def commit_walk(ch: ChallengeState, walk_digest: str, now: float) -> WalkStep:
    """A walk root (whose content has digest `walk_digest`) that arrived at `now`: only for a challenge with a
    memory phase whose opening request (with the nonce) was drawn (NotCommitted otherwise). A retry with the
    same root is answered with what is on record, even after the deadline or the verdict; another root once
    one is stored is AlreadyCommitted. A new one must arrive by the challenge's deadline (DeadlinePassed);
    the walk's own timing is the memory finding's (verifier.memory), judged with the openings."""
    if not ch.memory:
        raise NotCommitted(f"challenge {ch.challenge_id} has no memory phase: it takes no walk root")
    if ch.walk_digest is not None:
        if not _same(ch.walk_digest, walk_digest):
            raise AlreadyCommitted(f"challenge {ch.challenge_id} has another walk root on record")
        if ch.lanes_drawn:
            return WalkStep("replay", ch)
        if ch.state == JUDGED:
            raise _already_judged(ch)
        return WalkStep("draw", ch)
    if ch.state == JUDGED:
        raise _already_judged(ch)
    if ch.state != COMMITTED or not ch.requested:
        raise NotCommitted(f"challenge {ch.challenge_id} has no commitment yet: the walk's nonce comes with "
                           "the opening request")
    check_deadline(ch, now, "walk root")
    return WalkStep("store", replace(ch, walk_digest=walk_digest))


def draw_lanes(ch: ChallengeState) -> ChallengeState | None:
    """The lanes to open are drawn once, only after the walk root is stored: the state with them drawn, or
    None when they were drawn already (answer with them)."""
    if ch.lanes_drawn:
        return None
    if ch.state != COMMITTED or ch.walk_digest is None:
        raise WrongState("draw the lanes to open", (COMMITTED + " with a walk root",), ch.state)
    return replace(ch, lanes_drawn=True)


OpeningsAction = Literal["judge", "replay"]


def openings(ch: ChallengeState, openings_digest: str, now: float) -> OpeningsAction:
    """Openings (whose content has digest `openings_digest`) that arrived at `now`: `judge` them, or
    `replay` the verdict on record (a retry of the same openings; nothing is stored or counted again).

    Call it again under the row's lock before storing a verdict: a concurrent retry may have judged first.
    """
    if ch.state == JUDGED:
        if _same(ch.openings_digest, openings_digest):
            return "replay"
        raise _already_judged(ch)
    if ch.state != COMMITTED or not ch.requested:
        raise NotCommitted(f"challenge {ch.challenge_id} has no commitment yet")
    if ch.memory and not ch.lanes_drawn:
        raise NotCommitted(f"challenge {ch.challenge_id} has no walk root yet: its memory phase comes before "
                           "the openings")
    check_deadline(ch, now, "openings")
    return "judge"


def judge(ch: ChallengeState, now: float, openings_digest: str | None = None) -> ChallengeState:
    """The challenge judged at `now`: on openings (their digest), or without (a timeout)."""
    if ch.state == JUDGED:
        raise _already_judged(ch)
    if openings_digest is not None and not ch.requested:
        raise NotCommitted(f"challenge {ch.challenge_id} has no opening request; openings cannot be judged")
    return replace(ch, state=JUDGED, openings_digest=openings_digest, judged_at=float(now))


@dataclass(frozen=True)
class Expiry:
    """Why an open challenge is judged a timeout now: what it had (`committed`, `requested`: a commitment
    that saw its opening request and went silent withheld its openings), and, when its device never
    picked it up within the start window, that window (`start_window_s`; None: the deadline passed)."""

    committed: bool
    requested: bool
    start_window_s: float | None = None


def expiry(ch: ChallengeState, now: float, *, grace_s: float = EXPIRY_GRACE_S, asking: bool = False,
           policy: SchedulePolicy | None = None) -> Expiry | None:
    """Whether an open challenge is judged a timeout at `now` (an Expiry), or may still be answered (None).

    Only `grace_s` after the deadline: a commitment or openings that arrived in time are judged by their
    arrival time and may still be waiting for a worker or under verification. `asking`: its device asks
    for its next challenge, so it gave up on this one, which expires at the deadline (no grace). With
    `policy`, a challenge not picked up within the start window is missed at once: nothing of it can be
    in flight.
    """
    if not ch.is_open:
        raise WrongState("expire", OPEN_STATES, ch.state)
    if not (isinstance(grace_s, int | float) and math.isfinite(grace_s) and grace_s >= 0):
        raise InvalidParameter("grace_s", f"must be a non-negative number of seconds, got {grace_s!r}")
    grace = 0.0 if asking else grace_s
    missed = policy is not None and schedule.missed_start(ch.issued_at, ch.delivered_at, now, policy)
    if not missed and now - ch.issued_at <= ch.deadline_s + grace:
        return None
    return Expiry(committed=ch.state == COMMITTED, requested=ch.requested,
                  start_window_s=policy.start_window_s if missed and policy is not None else None)


# Scheduling (verifier/schedule.py draws the times) ----------------------------------------------------------
def round_due_at(next_due_at: float, last_round_at: float | None, job_open: bool, now: float,
                 policy: SchedulePolicy) -> float | None:
    """None when the provider's next round is due at `now`; else the earliest time it can come: its drawn
    time, and never closer than the minimum gap to the last round, whatever moved the drawn time (a
    registration update, a new device, a job), so that a provider cannot call rounds at will."""
    if next_due_at > now:
        return next_due_at
    if last_round_at is not None and now < last_round_at + policy.gap(job_open):
        return last_round_at + policy.gap(job_open)
    return None


def quiet_until(next_due_at: float, last_round_at: float | None, now: float,
                policy: SchedulePolicy) -> float | None:
    """For a device with no open challenge: the time until which no round can be due (None: one may be
    due now). The gap assumed is the smaller one of a provider with an open job, the earliest a round
    could come."""
    gap = policy.gap(True)
    until = max(next_due_at, (last_round_at + gap) if last_round_at is not None else 0.0)
    return until if until > now else None


@dataclass(frozen=True)
class Round:
    """A round issued at `now`: the devices that get a challenge, and when the provider's next one is due."""

    devices: tuple[int, ...]
    next_due_at: float


def issue_round(devices: Sequence[int], still_open: Collection[int], now: float, job_open: bool,
                policy: SchedulePolicy, uniform: Callable[[], float] | None = None) -> Round:
    """A round challenges every device of the provider at the same instant, except a device still answering
    an earlier round (judged on its own deadline); the next round's time is drawn from `now`."""
    drawn = schedule.next_round_at(now, job_open, policy) if uniform is None \
        else schedule.next_round_at(now, job_open, policy, uniform)
    return Round(tuple(d for d in devices if d not in still_open), drawn)


# Round trips ---------------------------------------------------------------------------------------------
def rtt_allowance(probes: Sequence[tuple[float, float | None]], now: float) -> float:
    """The round-trip allowance from the provider's probes, (sent_at, measured round trip or None): the
    minimum of the last RTT_SAMPLES measured within RTT_HISTORY_S (0 if none). A provider can only make a
    round trip look slower (by echoing late), never faster, so the minimum is the honest estimate; the
    verifier caps it (TimingConfig.max_rtt_allowance_s) and counts the cap in the cheating bound."""
    recent = sorted(((at, rtt) for at, rtt in probes if rtt is not None and at > now - RTT_HISTORY_S),
                    reverse=True)[:RTT_SAMPLES]
    return min((rtt for _, rtt in recent), default=0.0)


def echo(probe: str, sent_at: float, rtt_s: float | None, now: float) -> float:
    """The round trip of a probe echoed at `now`: once, within RTT_ECHO_WINDOW_S."""
    if rtt_s is not None:
        raise AlreadyEchoed(f"probe {probe} was echoed before")
    if now - sent_at > RTT_ECHO_WINDOW_S:
        raise ProbeExpired(f"probe {probe} is {now - sent_at:.1f} s old; echo within {RTT_ECHO_WINDOW_S:g} s")
    return now - sent_at


# Settlement ----------------------------------------------------------------------------------------------
FINAL_DECISIONS = ("release", "refund")


@dataclass(frozen=True)
class Settlement:
    """A job's settlement on record: its decision (None: never asked), reasons, and whether it is final."""

    decision: str | None
    reasons: tuple[str, ...]
    final: bool


def settle(previous: Settlement, decision: str, reasons: Sequence[str]) -> Settlement | None:
    """A new settlement decision: the settlement to record (and log), or None when nothing changed.
    Release and refund are final: a final settlement never changes again (WrongState)."""
    if previous.final:
        raise WrongState("settle", ("not final",), f"final ({previous.decision})")
    if decision == previous.decision and tuple(reasons) == previous.reasons:
        return None
    return Settlement(decision, tuple(reasons), decision in FINAL_DECISIONS)
