"""Trust scores and settlement decisions (docs/protocol.md, "Trust score", "Settlement").

Score: a Beta posterior over "this provider's next verdict is honest", from a Beta(1, 1) prior (a new
provider is unproven: mean 0.5 and a low lower bound, not distrust). Each verdict adds evidence weighted
by exp-decay with a half-life (default 7 days): a pass adds 1 to alpha; a correctness failure adds 20 to
beta (cheating is not noise); slower-than-claimed adds 5 (the hardware claim is suspect); a timeout
adds 1. The score is the posterior mean; the lower bound is the posterior's 5% quantile (a one-sided 95%
credible bound). Every score lists the verdicts that moved it most, in plain words.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gpuproof.kernels.errors import InvalidParameter
from gpuproof.verifier.outcome import Correctness, Timing, passed
from scipy.special import betaincinv

if TYPE_CHECKING:
    from gpuproof.verifier.hardware import HardwareFindings

DAY = 86400.0


@dataclass(frozen=True)
class ScoringPolicy:
    half_life_days: float = 7.0
    prior_alpha: float = 1.0
    prior_beta: float = 1.0
    pass_weight: float = 1.0
    correctness_failure_weight: float = 20.0
    slower_than_claimed_weight: float = 5.0
    timeout_weight: float = 1.0
    credible_level: float = 0.95

    def __post_init__(self) -> None:
        for name in ("half_life_days", "prior_alpha", "prior_beta"):
            if not getattr(self, name) > 0:
                raise InvalidParameter(name, f"must be positive, got {getattr(self, name)!r}")
        if not 0.5 < self.credible_level < 1:
            raise InvalidParameter("credible_level", "must be in (0.5, 1)")


@dataclass(frozen=True)
class VerdictRecord:
    """What the score needs of one verdict: of a hardware challenge, or of a training check (`Timing.TRAINING`).

    `evidence_id` names what was judged: the challenge's id, or for a training check the segment audit's id
    (a replayed segment) or the job's id (a run's timing flags).
    """

    evidence_id: str
    at: float  # unix seconds, the verifier's clock
    correctness: str  # a verifier.outcome.Correctness
    timing: str  # a verifier.outcome.Timing
    best_match: str = ""
    detail: str = ""
    claimed_profile: str = ""
    round_at: float | None = None  # the instant of the verifier's round it was issued in (hardware challenges)
    # the memory phase (spec v2 on a profiled card): "pass", "fail" or "missing" (verifier.memory.memory_status);
    # None: the challenge has none (v1, a CPU or unprofiled claim, a training check)
    memory: str | None = None

    @property
    def passed(self) -> bool:
        return passed(self.correctness, self.timing, self.memory)

    @property
    def proves_memory(self) -> bool:
        """Whether the record may verify a class: a challenge with a memory phase proves one only when its
        memory finding passed (a v2 verdict without one proves the compute class alone, which is no class)."""
        return self.memory in (None, "pass")

    @property
    def training(self) -> bool:
        """A training-work verdict (a replayed segment or a run's timing), not a hardware challenge."""
        return self.timing == Timing.TRAINING


@dataclass(frozen=True)
class TrustScore:
    score: float
    lower_bound: float
    evidence: int
    effective_evidence: float
    verified_class: str | None
    last_verified_at: float | None
    status: str  # "unproven", "trusted", "suspect"
    reasons: tuple[str, ...] = field(default=())


def _weight(record: VerdictRecord, policy: ScoringPolicy) -> tuple[str, float]:
    """(side, weight) of one verdict before decay: side is "for" or "against"."""
    if record.correctness == Correctness.FAIL:
        return "against", policy.correctness_failure_weight
    if record.timing == Timing.SLOWER or record.memory == "fail":  # a walk slower than the claimed card's
        return "against", policy.slower_than_claimed_weight  # memory: it does not hold the claimed table
    if record.timing == Timing.TIMEOUT:
        return "against", policy.timeout_weight
    return "for", policy.pass_weight


def _age(seconds: float) -> str:
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min ago"
    if seconds < DAY:
        return f"{seconds / 3600:.0f} h ago"
    return f"{seconds / DAY:.1f} days ago"


def _counts(side: str, weight: float) -> str:
    """How much a verdict moves the score, in words: its weight after decay, and for or against."""
    return (f"it counts {weight:.2f} in the provider's favour" if side == "for" else
            f"it counts {weight:.2f} against the provider")


def _describe(record: VerdictRecord, side: str, weight: float, now: float) -> str:
    if record.training:
        what = ("training replay passed" if record.correctness == Correctness.PASS else "training proof failed") + \
            (f" ({record.detail})" if record.detail else "")
        return f"training {record.evidence_id[:12]} {_age(now - record.at)}: {what}; {_counts(side, weight)}"
    if record.correctness == Correctness.FAIL:
        what = "failed the correctness check" + (f" ({record.detail})" if record.detail else "")
    else:
        said: dict[str, str] = {
            Timing.CONSISTENT: "passed, timing consistent with the claimed card",
            Timing.FASTER: "passed, faster than the claimed card (model misreported)",
            Timing.UNPROFILED: f"passed on an unprofiled device (rate of a {record.best_match})",
            Timing.SLOWER: f"slower than the claimed card (rate of a {record.best_match})",
            Timing.TIMEOUT: "timed out",
        }
        what = said.get(record.timing, record.timing)
        if record.memory == "fail":
            what = "failed the memory phase: the walk was slower than the claimed card's memory allows" + \
                (f" ({record.detail})" if record.detail else "")
    return f"challenge {record.evidence_id[:12]} {_age(now - record.at)}: {what}; {_counts(side, weight)}"


def score(records: Sequence[VerdictRecord], now: float, policy: ScoringPolicy | None = None) -> TrustScore:
    """The provider's trust score at time `now` from its verdict history."""
    policy = policy or ScoringPolicy()
    alpha, beta = policy.prior_alpha, policy.prior_beta
    contributions = []
    # Passes of one round (every device of the provider, challenged at the same instant) are one piece of
    # evidence about the provider, not one per registered device: together they weigh one pass. Failures
    # weigh in full, each.
    per_round = Counter(r.round_at for r in records if r.round_at is not None and r.passed and not r.training)
    for record in records:
        side, weight = _weight(record, policy)
        if side == "for" and record.round_at is not None and per_round[record.round_at] > 1:
            weight /= per_round[record.round_at]
        decayed = weight * 0.5 ** (max(0.0, now - record.at) / (policy.half_life_days * DAY))
        if side == "for":
            alpha += decayed
        else:
            beta += decayed
        contributions.append((decayed, side, record))
    mean = alpha / (alpha + beta)
    lower = float(betaincinv(alpha, beta, 1 - policy.credible_level))  # the Beta posterior's quantile
    passed = [r for r in records if r.passed and not r.training]  # the hardware was last verified when
    last = max((r.at for r in passed), default=None)
    # the class a pass proves is its claim, never a faster card's (verifier.hardware.verified_class)
    recent = [r.claimed_profile for r in passed
              if r.claimed_profile and r.claimed_profile != "unprofiled" and r.proves_memory
              and r.timing in (Timing.CONSISTENT, Timing.FASTER) and now - r.at <= 4 * policy.half_life_days * DAY]
    verified = Counter(recent).most_common(1)[0][0] if recent else None
    effective = (alpha - policy.prior_alpha) + (beta - policy.prior_beta)
    failed_recently = any(d > 0.5 and side == "against" for d, side, _ in contributions)
    status = "suspect" if failed_recently and mean < 0.5 else ("trusted" if lower >= 0.5 else "unproven")
    top = sorted(contributions, key=lambda c: c[0], reverse=True)[:3]
    reasons = [_describe(r, side, d, now) for d, side, r in top]
    if not records:
        reasons = ["no verdicts yet: unproven, not distrusted"]
    return TrustScore(score=mean, lower_bound=lower, evidence=len(records), effective_evidence=effective,
                      verified_class=verified, last_verified_at=last, status=status, reasons=tuple(reasons))


@dataclass(frozen=True)
class SettlementPolicy:
    """Thresholds of the settlement decision; configurable per marketplace."""

    release_min_lower_bound: float = 0.6
    max_pass_age_s: float = DAY
    refund_on_correctness_failure: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.release_min_lower_bound <= 1:
            raise InvalidParameter("release_min_lower_bound", "must be in [0, 1]")
        if not self.max_pass_age_s > 0:
            raise InvalidParameter("max_pass_age_s", "must be positive")


@dataclass(frozen=True)
class CheckpointVerdict:
    """A training-work check of the job (a replayed segment, the run's timing), named by `commitment_id`
    ("training segment 10->20"); `passed` None means still pending."""

    commitment_id: str
    passed: bool | None
    detail: str = ""


@dataclass(frozen=True)
class Decision:
    decision: str  # "release", "hold", "refund"
    reasons: tuple[str, ...]


def settle(trust: TrustScore, verdicts_during_job: Sequence[VerdictRecord], now: float,
           checkpoints: Sequence[CheckpointVerdict] = (), policy: SettlementPolicy | None = None,
           in_progress: Sequence[tuple[str, float]] = (), hardware: HardwareFindings | None = None) -> Decision:
    """Whether a job's payment may be released, from the provider's score and the job's own evidence.

    refund  a checkpoint replay failed, or the provider failed a correctness check during the job;
    hold    the lower bound is under the release threshold, the last passed challenge is stale, a
            checkpoint verdict is pending, or a challenge is in progress (`in_progress`: its id and
            its deadline; its verdict, pass, fail or timeout, may change the answer);
    release otherwise. Every decision lists all the reasons that apply.
    `hardware` (verifier.hardware.judge_devices) adds the job's per-device findings: a job is paid only for
    the devices and the class it names, each proven during the job.
    """
    policy = policy or SettlementPolicy()
    refund, hold = [], []
    for challenge_id, deadline_at in in_progress:
        hold.append(f"challenge {challenge_id[:12]} is in progress (its deadline is in "
                    f"{max(0.0, deadline_at - now):.0f} s)")
    for cp in checkpoints:
        if cp.passed is False:
            refund.append(f"{cp.commitment_id} failed" + (f": {cp.detail}" if cp.detail else ""))
        elif cp.passed is None:
            hold.append(f"{cp.commitment_id} is not verified yet" + (f": {cp.detail}" if cp.detail else ""))
    if policy.refund_on_correctness_failure:
        for v in verdicts_during_job:
            # the job's own training checks come as `checkpoints`
            if v.correctness == Correctness.FAIL and not v.training:
                what = "withheld its openings" if v.detail.startswith("withheld") else "failed its correctness check"
                refund.append(f"challenge {v.evidence_id[:12]} {what} during the job")
    if hardware is not None:
        refund += hardware.refund
        hold += hardware.hold
    if trust.lower_bound < policy.release_min_lower_bound:
        hold.append(f"trust lower bound {trust.lower_bound:.3f} is under {policy.release_min_lower_bound:.3f} "
                    f"({trust.status}, {trust.evidence} verdicts)")
    if trust.last_verified_at is None:
        hold.append("the provider has never passed a challenge")
    elif now - trust.last_verified_at > policy.max_pass_age_s:
        hold.append(f"last passed challenge is {_age(now - trust.last_verified_at)}, older than "
                    f"{policy.max_pass_age_s / 3600:.0f} h")
    if refund:
        return Decision("refund", tuple(refund + hold))
    if hold:
        return Decision("hold", tuple(hold))
    last = trust.last_verified_at
    assert last is not None  # otherwise the decision was "hold"
    proven = "; ".join(hardware.proven) + "; " if hardware is not None else ""
    return Decision("release", (f"{proven}trust lower bound {trust.lower_bound:.3f} >= "
                                f"{policy.release_min_lower_bound:.3f}; last passed challenge {_age(now - last)}; "
                                f"{len(checkpoints)} training checks passed",))


def verdict_record(verdict, at: float) -> VerdictRecord:  # noqa: ANN001
    """The score's view of a verifier.protocol.Verdict judged at time `at`."""
    f = verdict.failure
    return VerdictRecord(evidence_id=verdict.challenge_id, at=at, correctness=verdict.correctness,
                         timing=verdict.timing, best_match=verdict.best_match,
                         detail="" if f is None else failure_detail(f.reason, f.round, f.row, f.detail),
                         claimed_profile=verdict.claimed_profile)


def failure_detail(reason: str, round_: int, row: int, detail: str) -> str:
    """A failure in a few words: the row it was found in, or for a whole-challenge failure (a timeout, withheld
    openings: round -1) what happened."""
    return f"{reason} in round {round_} row {row}" if round_ >= 0 else f"{reason}: {detail}"
