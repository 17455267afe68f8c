"""Adapters between stored rows and verifier objects, and the queries that feed the protocol's rules.

The rules themselves (a challenge's states, deadline and grace, the round-trip allowance, which class a
device verified) are in verifier/ (lifecycle.py, hardware.py); here rows are read and locked, handed to
them as plain data, and what they return is stored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from gpuproof.gateway import translog, webhooks
from gpuproof.gateway.db import locked
from gpuproof.gateway.models import Challenge as ChallengeRow
from gpuproof.gateway.models import Device, Job, ProviderScore, RttProbe, SegmentAudit
from gpuproof.kernels.backend import Opening
from gpuproof.kernels.memory import LaneOpening, MemoryPlan
from gpuproof.kernels.spec import ChallengeParams
from gpuproof.verifier import evidence, hardware, lifecycle, transcript
from gpuproof.verifier import memory as vm
from gpuproof.verifier.lifecycle import EXPIRY_GRACE_S, RTT_HISTORY_S, RTT_SAMPLES, ChallengeState
from gpuproof.verifier.outcome import Correctness, Outcome, Timing
from gpuproof.verifier.profiles import Profile, load_profiles
from gpuproof.verifier.protocol import Challenge, Commitment, LaneRequest, OpeningRequest, Verifier, WalkCommitment
from gpuproof.verifier.schedule import SchedulePolicy
from gpuproof.verifier.timing import Thresholds
from gpuproof.verifier.trust import TrustScore, VerdictRecord, failure_detail, score
from sqlalchemy import BindParameter, bindparam, select
from sqlalchemy.orm import Session


def challenge_of(row: ChallengeRow) -> Challenge:
    params = ChallengeParams(row.seed, row.m, row.n, row.k, row.rounds, row.spec)
    plan = None
    if row.memory_plan is not None:
        mp = row.memory_plan
        plan = MemoryPlan(params, mp["table_rounds"], mp["lanes"], mp["steps"], mp["opened"])
    return Challenge(challenge_id=row.id, params=params,
                     device_model=row.device_model, profile=row.profile, issued_at=row.issued_at,
                     thresholds=Thresholds(row.expected_s, row.fast_s, row.slow_s, row.deadline_s),
                     spot_checks=row.spot_checks, memory=plan)


def state_of(row: ChallengeRow) -> ChallengeState:
    """The lifecycle's view of a stored challenge (verifier/lifecycle.py)."""
    return ChallengeState(challenge_id=row.id, state=row.state, issued_at=row.issued_at, deadline_s=row.deadline_s,
                          delivered_at=row.delivered_at, committed=row.roots is not None,
                          commit_digest=row.commit_digest, requested=row.pairs is not None,
                          openings_digest=row.openings_digest, judged_at=row.judged_at,
                          memory=row.memory_plan is not None, walk_digest=row.walk_digest,
                          lanes_drawn=row.lanes is not None)


def commitment_of(row: ChallengeRow) -> Commitment:
    assert row.roots is not None and row.received_at is not None and row.measured_s is not None
    roots = tuple(row.roots[i:i + 32] for i in range(0, len(row.roots), 32))
    return Commitment(row.id, roots, row.received_at, row.rtt_s or 0.0, row.measured_s)


def request_of(row: ChallengeRow) -> OpeningRequest:
    assert row.x is not None
    return OpeningRequest(row.id, tuple((int(r), int(i)) for r, i in row.pairs),
                          np.frombuffer(row.x, dtype="<u4").astype(np.int64), row.walk_nonce)


def walk_of(row: ChallengeRow) -> WalkCommitment | None:
    """The stored walk root with the verifier's timing of it (None: none came)."""
    if row.walk_root is None:
        return None
    assert row.nonce_sent_at is not None and row.walk_received_at is not None and row.walk_s is not None
    return WalkCommitment(row.id, row.walk_root, row.nonce_sent_at, row.walk_received_at, row.walk_rtt_s or 0.0,
                          row.walk_s)


def lanes_of(row: ChallengeRow) -> LaneRequest | None:
    """The stored lanes to open (None: not drawn)."""
    return None if row.lanes is None else LaneRequest(row.id, tuple(int(v) for v in row.lanes))


def store_challenge(provider_id: str, device_id: int, challenge: Challenge) -> ChallengeRow:
    p, t = challenge.params, challenge.thresholds
    return ChallengeRow(id=challenge.challenge_id, provider_id=provider_id, device_id=device_id,
                        device_model=challenge.device_model, profile=challenge.profile, seed=p.seed, spec=p.spec,
                        m=p.m, n=p.n, k=p.k, rounds=p.rounds, spot_checks=challenge.spot_checks,
                        issued_at=challenge.issued_at,
                        expected_s=t.expected_s, fast_s=t.fast_s, slow_s=t.slow_s, deadline_s=t.deadline_s,
                        state="issued", memory_plan=None if challenge.memory is None else
                        {k: v for k, v in challenge.memory.to_dict().items() if k != "spec"})


def transcript_of(row: ChallengeRow) -> dict:
    """The transcript of a challenge judged on its openings (verifier/transcript.py)."""
    openings = [Opening.from_json(o) for o in row.openings]
    lane_openings = [LaneOpening.from_json(o) for o in row.lane_openings or ()]
    return transcript.build(challenge_of(row), commitment_of(row), request_of(row), openings, row.verdict,
                            walk_of(row), lanes_of(row), lane_openings)


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


def record_verdict(session: Session, row: ChallengeRow, verdict_json: dict, now: float,
                   openings_digest: str | None = None, profiles: Mapping[str, Profile] | None = None) -> None:
    """Store a verdict (the lifecycle's judge step) and append it to the log, in the caller's transaction:
    with the hash of the transcript when the verdict was reached on openings (`openings_digest`; set
    `row.openings` first), else with null. A pass also updates the devices' stored verified classes
    (`store_verified`, by `profiles`; only a pass can change them)."""
    judged = lifecycle.judge(state_of(row), now, openings_digest)
    row.verdict = verdict_json
    row.outcome = verdict_json["outcome"]
    row.judged_at, row.state, row.openings_digest = judged.judged_at, judged.state, judged.openings_digest
    digest = evidence.transcript_digest(transcript_of(row)) if row.openings is not None else None
    translog.append(session, evidence.VERDICT, evidence.verdict_payload(row.id, row.provider_id, verdict_json,
                                                                        digest), now)
    webhooks.on_verdict(session, row, now)
    evidence_changed(session, row.provider_id, now)
    if row.outcome == Outcome.PASS.value:
        assert profiles is not None, "a pass changes the verified classes: record it with the profiles"
        store_verified(session, row.provider_id, now, profiles, device=row.device_id)


def store_trust(session: Session, provider_id: str, now: float) -> TrustScore:
    """The provider's trust at `now`, also written to its provider_scores row (what listings filter, sort
    and page by), in the caller's transaction."""
    row = locked(session, ProviderScore, provider_id)  # first: a writer that computed before a verdict committed
    trust = trust_of(session, provider_id, now)  # waits here, and computes after it (the sweep's race, PostgreSQL)
    if row is None:
        row = ProviderScore(provider_id=provider_id)
        session.add(row)
    row.score, row.lower_bound, row.evidence = trust.score, trust.lower_bound, trust.evidence
    row.status, row.computed_at = trust.status, now
    return trust


def evidence_changed(session: Session, provider_id: str, now: float) -> None:
    """After new evidence on a provider (a verdict, a segment's verdict, a run's flags), in the caller's
    transaction and after its log append (the log head's row lock orders these writers): the stored score
    is brought up to date and webhooks hear of a change of trust status. Every change to what
    `verdict_records_of` returns must come through here, and only as an addition: the rewritten
    provider_scores row is the version under which every replica holds a provider's records
    (gateway.trust_cache.HeldEvidence), and it changes with their number."""
    webhooks.check_trust(session, provider_id, now, store_trust(session, provider_id, now))


def expire_overdue(session: Session, verifier: Verifier, provider_id: str, now: float,
                   asking_device: int | None = None, schedule: SchedulePolicy | None = None,
                   grace_s: float = EXPIRY_GRACE_S) -> int:
    """Judge every open challenge of a provider that the lifecycle says has expired (lifecycle.expiry: the
    deadline and its grace, the asking device's own at its deadline, a missed start): a timeout verdict,
    on the record. The rows are locked (gateway.db.locked), so each is judged once. `asking_device`: the
    Device id that asks for its next challenge."""
    rows = session.execute(select(ChallengeRow).where(ChallengeRow.provider_id == provider_id,
                                                      ChallengeRow.state.in_(lifecycle.OPEN_STATES))
                           .order_by(ChallengeRow.id).with_for_update()  # gateway.db.locked: judged once
                           .execution_options(populate_existing=True)).scalars()
    expired = 0
    for row in rows:
        due = lifecycle.expiry(state_of(row), now, grace_s=grace_s, asking=row.device_id == asking_device,
                               policy=schedule)
        if due is None:
            continue
        verdict = verifier.timeout(challenge_of(row), now, committed=due.committed, requested=due.requested,
                                   start_window_s=due.start_window_s)
        record_verdict(session, row, verdict.to_json(), now)
        expired += 1
    return expired


def open_challenges(session: Session, provider_id: str) -> list[tuple[str, float]]:
    """The provider's challenges awaiting an answer: (id, deadline as a unix time)."""
    rows = session.execute(select(ChallengeRow).where(ChallengeRow.provider_id == provider_id,
                                                      ChallengeRow.state.in_(lifecycle.OPEN_STATES))
                           .order_by(ChallengeRow.id)).scalars()
    return [(row.id, state_of(row).deadline_at) for row in rows]


def record_of(challenge_id: str, at: float, v: dict, round_at: float | None = None, spec: str | None = None,
              profile: Profile | None = None) -> VerdictRecord:
    """The score's view of a stored verdict (`round_at`: the challenge's issue instant, its round; `spec` and
    the claimed `profile`: whether it needed a memory finding, verifier.memory.memory_status)."""
    f = v.get("failure") or {}
    detail = failure_detail(f.get("reason", ""), f.get("round", -1), f.get("row", -1), f.get("detail", "")) \
        if f else ""
    return VerdictRecord(evidence_id=challenge_id, at=at, correctness=v["correctness"], timing=v["timing"],
                         best_match=v.get("best_match", ""), detail=detail,
                         claimed_profile=v.get("claimed_profile", ""), round_at=round_at,
                         memory=vm.memory_status(spec, profile, v))


def verdict_records(session: Session, provider_id: str,
                    profiles: Mapping[str, Profile] | None = None) -> list[VerdictRecord]:
    """The provider's verdicts as the score sees them, each knowing whether its challenge needed a memory
    finding (verifier.memory.memory_status, by `profiles`: default the packaged ones)."""
    return verdict_records_of(session, [provider_id], profiles)[provider_id]


# verdict_records_of's three statements, built once: a statement built per call costs its construction and its
# cache key each time (about half of a one-provider trust read here), and these run on every score read
_IDS: BindParameter[list[str]] = bindparam("ids", expanding=True)
_JUDGED_CHALLENGES = (select(ChallengeRow.provider_id, ChallengeRow.id, ChallengeRow.judged_at, ChallengeRow.verdict,
                             ChallengeRow.issued_at, ChallengeRow.spec, ChallengeRow.profile)
                      .where(ChallengeRow.provider_id.in_(_IDS), ChallengeRow.state == "judged")
                      .order_by(ChallengeRow.judged_at))
_JUDGED_AUDITS = (select(SegmentAudit.provider_id, SegmentAudit.id, SegmentAudit.judged_at, SegmentAudit.outcome,
                         SegmentAudit.verdict)
                  .where(SegmentAudit.provider_id.in_(_IDS), SegmentAudit.state == "judged"))
_CLOSED_JOBS = (select(Job.provider_id, Job.id, Job.closed_at, Job.training_flags)
                .where(Job.provider_id.in_(_IDS), Job.training_state == "closed"))


def verdict_records_of(session: Session, provider_ids: Sequence[str],
                       profiles: Mapping[str, Profile] | None = None) -> dict[str, list[VerdictRecord]]:
    """`verdict_records` of several providers in three queries (a listing's page: O(page) queries would
    cost a round trip each), by provider id."""
    ids = list(dict.fromkeys(provider_ids))
    out: dict[str, list[VerdictRecord]] = {pid: [] for pid in ids}
    if not ids:
        return out
    rows = session.execute(_JUDGED_CHALLENGES, {"ids": ids}).all()
    profiles = load_profiles() if profiles is None else profiles
    for pid, cid, at, v, issued_at, spec, key in rows:
        out[pid].append(record_of(cid, at, v, round_at=issued_at, spec=spec, profile=profiles.get(key)))
    for pid, aid, at, outcome, v in session.execute(_JUDGED_AUDITS, {"ids": ids}).all():
        out[pid].append(VerdictRecord(evidence_id=aid, at=at, correctness=outcome, timing=Timing.TRAINING,
                                      detail=f"segment {v['start_step']}->{v['end_step']}: {v['reason']}"))
    for pid, jid, at, flags in session.execute(_CLOSED_JOBS, {"ids": ids}).all():
        if flags:
            out[pid].append(VerdictRecord(evidence_id=jid, at=at, correctness=Correctness.FAIL,
                                          timing=Timing.TRAINING, detail=flags[0]))
    return {pid: sorted(records, key=lambda r: r.at) for pid, records in out.items()}


def trust_of(session: Session, provider_id: str, now: float) -> TrustScore:
    return score(verdict_records(session, provider_id), now)


def trusts_of(session: Session, provider_ids: Sequence[str], now: float) -> dict[str, TrustScore]:
    """`trust_of` of several providers, from one batch of queries (`verdict_records_of`)."""
    return {pid: score(records, now) for pid, records in verdict_records_of(session, provider_ids).items()}


def trust_json(t: TrustScore) -> dict:
    return {"score": t.score, "lower_bound": t.lower_bound, "evidence": t.evidence,
            "effective_evidence": t.effective_evidence, "verified_class": t.verified_class,
            "last_verified_at": t.last_verified_at, "status": t.status, "reasons": list(t.reasons)}


VERIFIED_WINDOW_S = hardware.VERIFIED_WINDOW_S


def verified_classes(session: Session, provider_id: str, now: float, profiles: Mapping[str, Profile],
                     window_s: float = VERIFIED_WINDOW_S) -> dict[int, str]:
    """Per device: the class its recent passes verified (verifier.hardware.verified_classes), by the gateway's
    `profiles` (state.verifier.profiles: an operator's measured profiles included)."""
    return verified_classes_of(session, [provider_id], now, profiles, window_s)[provider_id]


_RECENT_PASSES = (select(ChallengeRow.provider_id, ChallengeRow.id, ChallengeRow.device_id, ChallengeRow.judged_at,
                         ChallengeRow.verdict, ChallengeRow.spec, ChallengeRow.profile)
                  .where(ChallengeRow.provider_id.in_(_IDS), ChallengeRow.outcome == Outcome.PASS.value,
                         ChallengeRow.judged_at > bindparam("since")))
_DEVICE_PASSES = _RECENT_PASSES.where(ChallengeRow.device_id == bindparam("device"))


def verified_classes_of(session: Session, provider_ids: Sequence[str], now: float, profiles: Mapping[str, Profile],
                        window_s: float = VERIFIED_WINDOW_S) -> dict[str, dict[int, str]]:
    """`verified_classes` of several providers in one query, by provider id."""
    return {pid: hardware.verified_classes(passes, now, window_s)
            for pid, passes in _proved_passes(session, provider_ids, now, profiles, window_s).items()}


def _proved_passes(session: Session, provider_ids: Sequence[str], now: float, profiles: Mapping[str, Profile],
                   window_s: float, device: int | None = None) -> dict[str, list[tuple[int, float, str]]]:
    """By provider id: its passes within the window as (device id, judged_at, the class the pass proves);
    only those of the device with id `device` when given."""
    ids = list(dict.fromkeys(provider_ids))
    passes: dict[str, list[tuple]] = {pid: [] for pid in ids}
    if ids:
        rows = session.execute(_RECENT_PASSES if device is None else _DEVICE_PASSES,
                               {"ids": ids, "since": now - window_s} | ({} if device is None else {"device": device})
                               ).all()
        for pid, *row in rows:
            passes[pid].append(tuple(row))

    def proved(cid: str, at: float, v: dict, spec: str, profile: str) -> str:  # the class the pass proves, capped
        cls = hardware.verified_class(record_of(cid, at, v, spec=spec, profile=profiles.get(profile)), profiles)
        return cls.key if cls is not None else ""

    return {pid: [(d, at, proved(cid, at, v, spec, prof)) for cid, d, at, v, spec, prof in rows]
            for pid, rows in passes.items()}


def unverified(now: float, window_s: float = VERIFIED_WINDOW_S) -> dict[str, float | None]:
    """A device's stored class while it has no pass: none, worked out (only a pass can give it one, and a
    pass works it out again), so the maintenance sweep need not: left null, a flood of registrations kept
    the sweep from devices whose class was due (it takes those never worked out first)."""
    return {"verified_class": None, "verified_until": now + window_s}


def store_verified(session: Session, provider_id: str, now: float, profiles: Mapping[str, Profile],
                   window_s: float = VERIFIED_WINDOW_S, device: int | None = None) -> None:
    """Work out the provider's devices' verified classes and store each with the instant until which it
    holds unless a pass comes (verifier.hardware.verified_classes_until; a device with none: the window,
    as only a pass can give it one), in the caller's transaction: ?model= listings read these columns, so
    a listing costs a page, not every recent pass. Run at each pass (after store_trust, whose lock on the
    provider's score row orders these writers) and by the maintenance sweep once `verified_until` passes.
    `device` (a device id): that device only (a pass changes only its own device's class)."""
    passes = _proved_passes(session, [provider_id], now, profiles, window_s, device)[provider_id]
    found = hardware.verified_classes_until(passes, now, window_s)
    which = select(Device).where(Device.provider_id == provider_id)
    for row in session.execute(which if device is None else which.where(Device.id == device)).scalars():
        row.verified_class, row.verified_until = found.get(row.id, (None, now + window_s))  # (unverified)


def rtt_allowance(session: Session, provider_id: str, now: float) -> float:
    """The provider's round-trip allowance (verifier.lifecycle.rtt_allowance) from its recent probes: those
    sent before `now` and echoed by the time this reads them."""
    rows = session.execute(select(RttProbe.sent_at, RttProbe.rtt_s).where(RttProbe.provider_id == provider_id,
                                                                          RttProbe.rtt_s.is_not(None),
                                                                          RttProbe.sent_at > now - RTT_HISTORY_S,
                                                                          RttProbe.sent_at <= now)
                           .order_by(RttProbe.sent_at.desc()).limit(RTT_SAMPLES)).all()
    return lifecycle.rtt_allowance([(at, rtt) for at, rtt in rows], now)
