"""The gateway's side of training-work proofs (docs/protocol.md, "Training proofs"): pure functions the
gateway and the tests share, so that the 200-run honesty check exercises the code that judges.

- `TrainingPolicy`: what a job's `checkpoint_policy` says (interval, segments to audit, chunks per
  segment, replay mode, timing floor), validated.
- `check_next`: a commitment received over the network must extend the job's hash chain exactly.
- `timing_flags`: commitments that arrived faster than the claimed card could train, or bunched at the
  end of the run, are flagged (a flag fails the job's training evidence).
- `draw_audits`: after the provider closes the run, q segments (t -> t+k) and c chunks at each segment's
  end are drawn with the operating system's CSPRNG: nothing the provider committed could predict them.
- `admit` and `close_run`: the run's lifecycle (a commitment is accepted while the run is open, once per
  step; closing checks the arrival times and draws the audits, with their deadline).
- `AuditState` and its rules (`answer_audit`, `after_answer`, `audit_expiry`, `require_ready`,
  `replay_result`): a segment audit's lifecycle, requested -> ready -> judged.
- `check_openings`: batches and opened chunks checked on arrival, against the end commitment.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from gpuproof.kernels.errors import InvalidParameter, ProofError
from gpuproof.verifier import checkpoints
from gpuproof.verifier.lifecycle import (
    AlreadyCommitted,
    AlreadyJudged,
    AlreadyOpened,
    AlreadyUploaded,
    NotReady,
    RunClosed,
    TooFewCommitments,
    TooManyCommitments,
    WrongState,
)

ZERO = checkpoints.ZERO
MODES = ("exact", "tolerance")


@dataclass(frozen=True)
class TrainingPolicy:
    """A job's checkpoint policy. `min_step_s` is the fastest one training step could run on the claimed
    card (the renter knows its job); with `step_flops` instead, the floor is step_flops over the card's
    dense int8 peak, a bound no real training step beats. 0 disables the too-fast check."""

    interval: int = 10
    segments: int = 3
    chunks: int = 8
    mode: str = "exact"
    tau: float | None = None
    min_step_s: float = 0.0
    step_flops: float = 0.0
    workload: dict[str, Any] = field(default_factory=dict)
    audit_deadline_s: float = 600.0
    max_commitments: int = 100_000
    arrival_slack_s: float = 1.0

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> TrainingPolicy:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(raw) - known)
        if unknown:
            raise InvalidParameter("checkpoint_policy", f"unknown fields {unknown}; known: {sorted(known)}")
        try:
            policy = cls(**raw)
        except TypeError as exc:
            raise InvalidParameter("checkpoint_policy", str(exc)) from None
        policy.validate()
        return policy

    def validate(self) -> None:
        def integer(name: str, low: int, high: int) -> None:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not low <= v <= high:
                raise InvalidParameter(f"checkpoint_policy.{name}", f"must be an integer in {low}..{high}, got {v!r}")

        def number(name: str, low: float, high: float) -> None:
            v = getattr(self, name)
            if not isinstance(v, int | float) or isinstance(v, bool) or not low <= v <= high:
                raise InvalidParameter(f"checkpoint_policy.{name}", f"must be a number in [{low:g}, {high:g}], "
                                       f"got {v!r}")

        integer("interval", 1, 10**9)
        integer("segments", 1, 64)
        integer("chunks", 1, 256)
        integer("max_commitments", 2, 1_000_000)
        number("min_step_s", 0, 86400)
        number("step_flops", 0, 1e21)
        number("audit_deadline_s", 1, 7 * 86400)
        number("arrival_slack_s", 0, 3600)
        if self.mode not in MODES:
            raise InvalidParameter("checkpoint_policy.mode", f"expected one of {MODES}, got {self.mode!r}")
        if self.tau is not None:
            number("tau", 1e-12, 1.0)
        if not isinstance(self.workload, dict) or len(str(self.workload)) > 2000:
            raise InvalidParameter("checkpoint_policy.workload", "must be a small object, e.g. "
                                   '{"name": "mlp", "params": {"seed": 7}}')

    def step_floor_s(self, int8_tops: float | None) -> float:
        """The fastest a step may run on the claimed card (0: no check)."""
        from_flops = self.step_flops / (int8_tops * 1e12) if self.step_flops and int8_tops else 0.0
        return max(float(self.min_step_s), from_flops)


@dataclass(frozen=True)
class Received(checkpoints.CheckpointCommitment):
    """A stored commitment and when the gateway received it."""

    received_at: float


def check_next(previous: Received | None, new: Received, policy: TrainingPolicy) -> None:
    """Raises InvalidParameter with the reason unless `new` extends the chain that ends at `previous`."""
    expected = checkpoints.chain_hash(new.step, new.root, new.batch_hash, new.prev_hash)
    if not hmac.compare_digest(expected, new.hash):
        raise InvalidParameter("hash", "does not match SHA-256 over the commitment's fields "
                               "(verifier.checkpoints.chain_hash)")
    if previous is None:
        if new.step != 0 or new.prev_hash != ZERO:
            raise InvalidParameter("step", "the first commitment is the initial state: step 0, prev_hash zero")
        return
    if new.step != previous.step + policy.interval:
        raise InvalidParameter("step", f"expected step {previous.step + policy.interval} (every "
                               f"{policy.interval} steps), got {new.step}")
    if not hmac.compare_digest(new.prev_hash, previous.hash):
        raise InvalidParameter("prev_hash", f"does not chain on the commitment at step {previous.step}")
    if [(e.name, e.dtype, e.shape) for e in new.manifest] != [(e.name, e.dtype, e.shape) for e in previous.manifest]:
        raise InvalidParameter("manifest", "tensors (names, dtypes, shapes) differ from the previous commitment's")


def timing_flags(received: Sequence[Received], floor_s: float, slack_s: float = 1.0) -> list[str]:
    """Why the commitments' arrival times cannot be those of a real run (empty if nothing is wrong).

    too-fast: for some commitments i < j, the time between their arrivals plus `slack_s` is under half
              the time steps i..j need on the claimed card. An honest commitment may arrive late (a busy
              machine, a slow network, retries) but never early, so a delay of up to `slack_s` on the
              earlier one cannot trip it: honest bursts are forgiven, a run sent at once is not once its
              steps need more than 2 x slack_s. Checked over every pair in one pass: with
              v = arrival - step * floor_s / 2, a pair trips when a later v is below an earlier v by more
              than slack_s.
    at-end:   at least 4 commitments after the first, and half or more of them arrived in the last 10% of
              the time between the first and the last (an honest run spreads them out).
    """
    flags = []
    if floor_s > 0 and received:
        top = received[0]
        for b in received[1:]:
            v_top = top.received_at - top.step * floor_s / 2
            v_b = b.received_at - b.step * floor_s / 2
            if v_b < v_top - slack_s:
                need = (b.step - top.step) * floor_s
                flags.append(f"too-fast: steps {top.step}->{b.step} committed {b.received_at - top.received_at:.3f} s "
                             f"apart; the claimed card needs at least {need:.3f} s (half of it, less "
                             f"{slack_s:g} s of allowed delivery delay, is the limit)")
                break
            if v_b > v_top:
                top = b
    later = received[1:]
    if len(later) >= 4:
        first, last = received[0].received_at, received[-1].received_at
        cut = last - 0.1 * (last - first)
        bunched = sum(r.received_at >= cut for r in later)
        if bunched * 2 >= len(later):
            flags.append(f"at-end: {bunched} of {len(later)} commitments arrived in the last 10% of the run "
                         f"({last - cut:.3f} s)")
    return flags


@dataclass(frozen=True)
class AuditDraw:
    start_step: int
    end_step: int
    chunks: tuple[tuple[str, int], ...]


def draw_audits(received: Sequence[Received], policy: TrainingPolicy,
                rng: secrets.SystemRandom | None = None,
                manifest_of: Callable[[Received], Sequence[checkpoints.TensorEntry]] | None = None
                ) -> list[AuditDraw]:
    """q distinct segments between consecutive commitments, and c chunks of each segment's end state:
    one chunk of every tensor that has data first (so no tensor escapes), then uniform over all chunks.
    `manifest_of(end)` gives a drawn segment's end manifest when `received` carries none (the gateway
    reads only the q drawn ones, not the run's: issue 18, a close is O(q) in manifests, not O(run))."""
    rng = rng or secrets.SystemRandom()
    if len(received) < 2:
        raise InvalidParameter("commitments", "a run needs at least two commitments (step 0 and one more)")
    picks = sorted(rng.sample(range(len(received) - 1), min(policy.segments, len(received) - 1)))
    out = []
    for j in picks:
        end = received[j + 1]
        manifest = manifest_of(end) if manifest_of is not None else end.manifest
        tensors = [e for e in manifest if e.chunks]
        chosen: set[tuple[str, int]] = set()
        for e in rng.sample(tensors, min(len(tensors), policy.chunks)):
            chosen.add((e.name, rng.randrange(e.chunks)))
        total = sum(e.chunks for e in tensors)
        while len(chosen) < min(policy.chunks, total):
            at = rng.randrange(total)
            for e in tensors:
                if at < e.chunks:
                    chosen.add((e.name, at))
                    break
                at -= e.chunks
        out.append(AuditDraw(received[j].step, end.step, tuple(sorted(chosen))))
    return out


def admit(job_id: str, step: int, hash_: bytes, stored_hash: bytes | None, closed_at: float | None,
          count: int, policy: TrainingPolicy) -> Literal["store", "replay"]:
    """Whether a checkpoint commitment for `step` (chain hash `hash_`) is a new one to `store` (after
    `check_next`) or a retry to `replay` (`stored_hash`: the step's commitment on record, if any).

    Other content for a stored step is AlreadyCommitted; none is accepted once the run is closed
    (`closed_at` not None: RunClosed) or when the job has `count` >= policy.max_commitments already
    (TooManyCommitments). A retry of a stored one is answered even after the close.
    """
    if stored_hash is not None:
        if not hmac.compare_digest(stored_hash, hash_):
            raise AlreadyCommitted(f"step {step} of job {job_id} has another commitment")
        return "replay"
    if closed_at is not None:
        raise RunClosed(f"job {job_id}'s run was closed at {closed_at}; no more commitments")
    if count >= policy.max_commitments:
        raise TooManyCommitments(f"the policy allows {policy.max_commitments} per job")
    return "store"


@dataclass(frozen=True)
class ClosedRun:
    """A run closed at `closed_at`: its timing flags, the audits drawn, and their deadline (a clock value)."""

    flags: tuple[str, ...]
    audits: tuple[AuditDraw, ...]
    closed_at: float
    deadline_at: float


def close_run(job_id: str, received: Sequence[Received], policy: TrainingPolicy, device_tops: Sequence[float],
              now: float, rng: secrets.SystemRandom | None = None,
              manifest_of: Callable[[Received], Sequence[checkpoints.TensorEntry]] | None = None) -> ClosedRun:
    """Close a run at `now`, after every commitment is stored: the arrival times are checked against the
    fastest card the provider claims (`device_tops`: their dense int8 peaks; a provider's job may run on
    any of its devices, so the floor is the fastest one's), then the audits are drawn (`draw_audits`), each
    due policy.audit_deadline_s after the close. A run needs step 0 and one more (TooFewCommitments)."""
    if len(received) < 2:
        raise TooFewCommitments(f"job {job_id} has {len(received)} commitments; a run needs step 0 and at "
                                "least one more")
    tops = max(device_tops, default=None)
    flags = timing_flags(received, policy.step_floor_s(tops), policy.arrival_slack_s)
    draws = draw_audits(received, policy, rng, manifest_of)
    return ClosedRun(tuple(flags), tuple(draws), float(now), float(now) + policy.audit_deadline_s)


class SegmentFailure(ProofError):
    """A segment's evidence is wrong; `tensor` and `chunk` say where, when one chunk is to blame."""

    def __init__(self, reason: str, tensor: str | None = None, chunk: int | None = None) -> None:
        super().__init__(reason)
        self.tensor, self.chunk = tensor, chunk


OpenedChunk = checkpoints.Opened  # an opened chunk, as the replay uses it


def check_openings(end: Received, requested: Sequence[tuple[str, int]], batches: Sequence[Sequence[int]],
                   opened: Sequence[OpenedChunk], steps: int) -> None:
    """Raises SegmentFailure naming what is wrong: the batches must be the segment's committed ones and the
    chunks exactly the requested ones, each in the end commitment's root."""


    if len(batches) != steps:
        raise SegmentFailure(f"the segment has {steps} steps; {len(batches)} batches were sent")
    if not hmac.compare_digest(checkpoints.batch_hash(batches), end.batch_hash):
        raise SegmentFailure(f"the batches do not hash to the batch_hash committed at step {end.step}")
    got = sorted((o.name, o.index) for o in opened)
    if got != sorted(requested):
        raise SegmentFailure(f"opened chunks {got[:4]}... are not the requested {sorted(requested)[:4]}...")
    for o in opened:
        try:
            checkpoints.verify_chunk(end.root, end.manifest, o.name, o.index, o.chunk, o.path)
        except (ProofError, InvalidParameter) as exc:
            raise SegmentFailure(f"chunk {o.index} of {o.name!r} is not in the root committed at step "
                                 f"{end.step}: {exc}", o.name, o.index) from None


def replay_fields(audit_id: str, job_id: str, start_step: int, end_step: int, start_root: str, end_root: str,
                  end_hash: str, upload_sha256: str | None, result: Mapping[str, Any]) -> dict[str, Any]:
    """What a validator signs for one replayed segment (verifier.signatures.replay_message): the audit,
    the evidence it checked (roots, end hash, the upload's SHA-256) and its verdict."""
    return {"audit_id": audit_id, "job_id": job_id, "start_step": start_step, "end_step": end_step,
            "start_root": start_root, "end_root": end_root, "end_hash": end_hash, "upload_sha256": upload_sha256,
            **{k: result.get(k) for k in ("outcome", "mode", "reason", "tensor", "chunk", "distance", "tau")}}


# A segment audit's lifecycle ------------------------------------------------------------------------------
#     requested --upload + openings, both checked--> ready --validator's signed replay--> judged
#         \__ a part that fails its check, or the deadline passing first ______________/ (fail)
AUDIT_STATES = ("requested", "ready", "judged")
AuditPart = Literal["uploaded", "opened"]


@dataclass(frozen=True)
class AuditState:
    """What the lifecycle knows of one segment audit: its state, its deadline for the provider's evidence
    (a clock value), the digests of the parts on record (the upload's SHA-256, `lifecycle.digest` of the
    openings) and the signature of the validator's verdict, if any."""

    audit_id: str
    state: str
    deadline_at: float
    upload_sha256: str | None = None
    openings_digest: str | None = None
    verdict_signature: str | None = None

    def __post_init__(self) -> None:
        if self.state not in AUDIT_STATES:
            raise InvalidParameter("state", f"expected one of {AUDIT_STATES}, got {self.state!r}")
        if self.state == "ready" and (self.upload_sha256 is None or self.openings_digest is None):
            raise InvalidParameter("state", "an audit is ready only with its upload and its openings")


def answer_audit(audit: AuditState, part: AuditPart, content_digest: str) -> Literal["store", "replay"]:
    """A part of the provider's evidence for an audit (`uploaded`: the state at the segment's start, by its
    SHA-256; `opened`: the batches and chunks, by their digest): `store` it, or `replay` the audit as on
    record for a retry of the same content. Other content once the part is on record is AlreadyUploaded or
    AlreadyOpened; anything new for a judged audit is AlreadyJudged."""
    on_record = audit.upload_sha256 if part == "uploaded" else audit.openings_digest
    if on_record is None and audit.state != "judged":
        return "store"
    if on_record is not None and hmac.compare_digest(on_record, content_digest):
        return "replay"
    detail = f"audit {audit.audit_id} is {audit.state}" + (f" and was {part} with other content"
                                                           if on_record is not None else "")
    if audit.state == "judged":
        raise AlreadyJudged(detail)
    raise (AlreadyUploaded if part == "uploaded" else AlreadyOpened)(detail)


def after_answer(audit: AuditState) -> str:
    """The state of an audit once a part that checked out is stored: ready when both parts are on record."""
    if audit.state == "judged":
        raise WrongState("store a part of an audit", ("requested", "ready"), audit.state)
    return "ready" if audit.upload_sha256 is not None and audit.openings_digest is not None else "requested"


def audit_expiry(audit: AuditState, now: float) -> str | None:
    """Why an audit fails at `now` for want of the provider's evidence (None: it does not): still requested
    after its deadline. A ready audit waits for its validator and does not expire."""
    if audit.state != "requested" or not audit.deadline_at < now:
        return None
    missing = [what for what, have in (("the state upload", audit.upload_sha256),
                                       ("the openings", audit.openings_digest)) if not have]
    return f"{' and '.join(missing)} did not arrive before the deadline"


def require_ready(audit: AuditState, why: str, *, upload: bool = False) -> None:
    """Replay materials exist only for a ready audit (with its upload kept, when `upload`); NotReady says
    the state and `why`."""
    if audit.state != "ready" or (upload and audit.upload_sha256 is None):
        raise NotReady(f"audit {audit.audit_id} is {audit.state}; {why}")


def replay_result(audit: AuditState, signature: str) -> Literal["store", "replay"]:
    """A validator's signed verdict for an audit: `store` it (the audit is ready), or `replay` the audit
    for a retry of the same signed verdict; another verdict for a judged audit is AlreadyJudged, one for an
    audit still waiting for the provider's evidence NotReady."""
    if audit.state == "judged":
        if audit.verdict_signature is not None and hmac.compare_digest(audit.verdict_signature, signature):
            return "replay"
        raise AlreadyJudged(f"audit {audit.audit_id} has a verdict")
    if audit.state != "ready":
        raise NotReady(f"audit {audit.audit_id} is {audit.state}")
    return "store"
