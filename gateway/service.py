"""Adapters between stored rows and verifier objects; no protocol logic of its own."""

from __future__ import annotations

from collections import Counter

import numpy as np
from gpuproof.gateway import translog
from gpuproof.gateway.models import Challenge as ChallengeRow
from gpuproof.gateway.models import Job, RttProbe, SegmentAudit
from gpuproof.kernels.backend import Opening
from gpuproof.kernels.spec import ChallengeParams
from gpuproof.verifier import evidence, transcript
from gpuproof.verifier.outcome import Correctness, Outcome, Timing
from gpuproof.verifier.protocol import Challenge, Commitment, OpeningRequest, Verifier
from gpuproof.verifier.schedule import SchedulePolicy, missed_start
from gpuproof.verifier.timing import Thresholds
from gpuproof.verifier.trust import TrustScore, VerdictRecord, failure_detail, score
from sqlalchemy import select
from sqlalchemy.orm import Session


def challenge_of(row: ChallengeRow) -> Challenge:
    return Challenge(challenge_id=row.id, params=ChallengeParams(row.seed, row.m, row.n, row.k, row.rounds),
                     device_model=row.device_model, profile=row.profile, issued_at=row.issued_at,
                     thresholds=Thresholds(row.expected_s, row.fast_s, row.slow_s, row.deadline_s),
                     spot_checks=row.spot_checks)


def commitment_of(row: ChallengeRow) -> Commitment:
    assert row.roots is not None and row.received_at is not None and row.measured_s is not None
    roots = tuple(row.roots[i:i + 32] for i in range(0, len(row.roots), 32))
    return Commitment(row.id, roots, row.received_at, row.rtt_s or 0.0, row.measured_s)


def request_of(row: ChallengeRow) -> OpeningRequest:
    assert row.x is not None
    return OpeningRequest(row.id, tuple((int(r), int(i)) for r, i in row.pairs),
                          np.frombuffer(row.x, dtype="<u4").astype(np.int64))


def store_challenge(provider_id: str, device_id: int, challenge: Challenge) -> ChallengeRow:
    p, t = challenge.params, challenge.thresholds
    return ChallengeRow(id=challenge.challenge_id, provider_id=provider_id, device_id=device_id,
                        device_model=challenge.device_model, profile=challenge.profile, seed=p.seed, m=p.m, n=p.n,
                        k=p.k, rounds=p.rounds, spot_checks=challenge.spot_checks, issued_at=challenge.issued_at,
                        expected_s=t.expected_s, fast_s=t.fast_s, slow_s=t.slow_s, deadline_s=t.deadline_s,
                        state="issued")


def transcript_of(row: ChallengeRow) -> dict:
    """The transcript of a challenge judged on its openings (verifier/transcript.py)."""
    openings = [Opening.from_json(o) for o in row.openings]
    return transcript.build(challenge_of(row), commitment_of(row), request_of(row), openings, row.verdict)


def log_commitment(session: Session, row: ChallengeRow) -> None:
    """Append a stored commitment to the log (at its arrival time), in the transaction that stores it."""
    assert row.roots is not None and row.received_at is not None
    roots = [row.roots[i:i + 32] for i in range(0, len(row.roots), 32)]
    translog.append(session, evidence.COMMITMENT, evidence.commitment_payload(row.id, row.provider_id, roots),
                    row.received_at)


def log_opening_request(session: Session, row: ChallengeRow, now: float) -> None:
    """Append a drawn opening request (pairs, hash of x) to the log, in the transaction that stores it."""
    assert row.pairs is not None and row.x is not None
    translog.append(session, evidence.OPENING_REQUEST,
                    evidence.request_payload(row.id, row.provider_id, row.pairs, row.x), now)


def record_verdict(session: Session, row: ChallengeRow, verdict_json: dict, now: float) -> None:
    """Store a verdict and append it to the log, in the caller's transaction: with the hash of the
    transcript when the verdict was reached on openings (set `row.openings` first), else with null."""
    row.verdict = verdict_json
    row.outcome = verdict_json["outcome"]
    row.judged_at = now
    row.state = "judged"
    digest = evidence.transcript_digest(transcript_of(row)) if row.openings is not None else None
    translog.append(session, evidence.VERDICT, evidence.verdict_payload(row.id, row.provider_id, verdict_json,
                                                                        digest), now)


EXPIRY_GRACE_S = 60.0


def expire_overdue(session: Session, verifier: Verifier, provider_id: str, now: float,
                   asking_device: int | None = None, schedule: SchedulePolicy | None = None,
                   grace_s: float = EXPIRY_GRACE_S) -> int:
    """Judge every open challenge of a provider whose deadline passed: a timeout verdict, on the record.

    Only `grace_s` (EXPIRY_GRACE_S, GPUPROOF_EXPIRY_GRACE_S) after the deadline:
    a commitment or openings that arrived in time are judged by
    their arrival time, and may still be waiting for a worker thread or under verification (another
    device's poll, a settlement or the sweep must not judge them a timeout meanwhile). The exception is
    `asking_device` (a Device id): a device asking for its next challenge has given up on its own
    overdue one, which is judged at once, so that it gets a new challenge instead of the dead one.
    With `schedule`, a challenge its device has not picked up within the start window is missed (a
    timeout) at once: nothing of it can be in flight.
    """
    rows = session.execute(select(ChallengeRow).where(ChallengeRow.provider_id == provider_id,
                                                      ChallengeRow.state.in_(("issued", "committed")))
                           .order_by(ChallengeRow.id).with_for_update()  # gateway.db.locked: judged once
                           .execution_options(populate_existing=True)).scalars()
    expired = 0
    for row in rows:
        grace = 0.0 if row.device_id == asking_device else grace_s
        missed = schedule is not None and missed_start(row.issued_at, row.delivered_at, now, schedule)
        if not missed and now - row.issued_at <= row.deadline_s + grace:
            continue
        verdict = verifier.timeout(challenge_of(row), now, committed=row.state == "committed",
                                   requested=row.pairs is not None,
                                   start_window_s=schedule.start_window_s if missed and schedule else None)
        record_verdict(session, row, verdict.to_json(), now)
        expired += 1
    return expired


def open_challenges(session: Session, provider_id: str) -> list[tuple[str, float]]:
    """The provider's challenges awaiting an answer: (id, deadline as a unix time)."""
    rows = session.execute(select(ChallengeRow.id, ChallengeRow.issued_at, ChallengeRow.deadline_s)
                           .where(ChallengeRow.provider_id == provider_id,
                                  ChallengeRow.state.in_(("issued", "committed"))).order_by(ChallengeRow.id)).all()
    return [(cid, issued_at + deadline_s) for cid, issued_at, deadline_s in rows]


def record_of(challenge_id: str, at: float, v: dict, round_at: float | None = None) -> VerdictRecord:
    """The score's view of a stored verdict (`round_at`: the challenge's issue instant, its round)."""
    f = v.get("failure") or {}
    detail = failure_detail(f.get("reason", ""), f.get("round", -1), f.get("row", -1), f.get("detail", "")) \
        if f else ""
    return VerdictRecord(evidence_id=challenge_id, at=at, correctness=v["correctness"], timing=v["timing"],
                         best_match=v.get("best_match", ""), detail=detail,
                         claimed_profile=v.get("claimed_profile", ""), round_at=round_at)


def verdict_records(session: Session, provider_id: str) -> list[VerdictRecord]:
    rows = session.execute(select(ChallengeRow.id, ChallengeRow.judged_at, ChallengeRow.verdict,
                                  ChallengeRow.issued_at)
                           .where(ChallengeRow.provider_id == provider_id, ChallengeRow.state == "judged")
                           .order_by(ChallengeRow.judged_at)).all()
    out = []
    for cid, at, v, issued_at in rows:
        out.append(record_of(cid, at, v, round_at=issued_at))
    audits = session.execute(select(SegmentAudit.id, SegmentAudit.judged_at, SegmentAudit.outcome, SegmentAudit.verdict)
                             .where(SegmentAudit.provider_id == provider_id, SegmentAudit.state == "judged")).all()
    out += [VerdictRecord(evidence_id=aid, at=at, correctness=outcome, timing=Timing.TRAINING,
                          detail=f"segment {v['start_step']}->{v['end_step']}: {v['reason']}")
            for aid, at, outcome, v in audits]
    flagged = session.execute(select(Job.id, Job.closed_at, Job.training_flags)
                              .where(Job.provider_id == provider_id, Job.training_state == "closed")).all()
    out += [VerdictRecord(evidence_id=jid, at=at, correctness=Correctness.FAIL, timing=Timing.TRAINING,
                          detail=flags[0])
            for jid, at, flags in flagged if flags]
    return sorted(out, key=lambda r: r.at)


def trust_of(session: Session, provider_id: str, now: float) -> TrustScore:
    return score(verdict_records(session, provider_id), now)


def trust_json(t: TrustScore) -> dict:
    return {"score": t.score, "lower_bound": t.lower_bound, "evidence": t.evidence,
            "effective_evidence": t.effective_evidence, "verified_class": t.verified_class,
            "last_verified_at": t.last_verified_at, "status": t.status, "reasons": list(t.reasons)}


VERIFIED_WINDOW_S = 28 * 86400  # passes older than this no longer verify a device's class


def verified_classes(session: Session, provider_id: str, now: float,
                     window_s: float = VERIFIED_WINDOW_S) -> dict[int, str]:
    """Per device: the profile its recent passed challenges' measured rates matched most often."""
    rows = session.execute(select(ChallengeRow.device_id, ChallengeRow.verdict)
                           .where(ChallengeRow.provider_id == provider_id, ChallengeRow.outcome == Outcome.PASS.value,
                                  ChallengeRow.judged_at > now - window_s)).all()
    counts: dict[int, Counter] = {}
    for device_id, verdict in rows:
        if verdict.get("best_match"):
            counts.setdefault(device_id, Counter())[verdict["best_match"]] += 1
    return {d: c.most_common(1)[0][0] for d, c in counts.items()}


RTT_SAMPLES = 5
RTT_HISTORY_S = 3600.0  # round trips older than this are not used (and the maintenance sweep deletes them)


def rtt_allowance(session: Session, provider_id: str, now: float) -> float:
    """The minimum of the provider's last few measured round trips in the past hour (0 if none).

    A provider can only make a round trip look slower (by echoing late), never faster, so the minimum is
    the honest estimate; the verifier caps it (TimingConfig.max_rtt_allowance_s) and counts the cap in
    the cheating bound.
    """
    rows = session.execute(select(RttProbe.rtt_s).where(RttProbe.provider_id == provider_id,
                                                        RttProbe.rtt_s.is_not(None),
                                                        RttProbe.sent_at > now - RTT_HISTORY_S)
                           .order_by(RttProbe.sent_at.desc()).limit(RTT_SAMPLES)).scalars().all()
    return min((r for r in rows if r is not None), default=0.0)
