"""Challenges over HTTP: next (signed), commitment (signed), walk (signed; spec v2's memory phase), openings
(signed), transcript (public).

The lifecycle's rules (states, deadline, retries, expiry, when a round is due) are verifier/lifecycle.py's;
here rows are loaded and locked, the rules called, their results stored and answered. A refusal is the
rule's typed error, mapped to its status by gateway/problems.py.
"""

from __future__ import annotations

import functools
import random
import secrets
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import anyio
from fastapi import APIRouter, Depends, Request, Response, status
from gpuproof.gateway import metrics, service
from gpuproof.gateway.auth import SignedProviderDep
from gpuproof.gateway.db import locked, take_turns
from gpuproof.gateway.limits import limit_ip
from gpuproof.gateway.models import Challenge as ChallengeRow
from gpuproof.gateway.models import Device, Job, Provider, RttProbe
from gpuproof.gateway.problems import Problem
from gpuproof.gateway.schemas import CommitmentIn, IdPath, NextChallenge, OpeningsIn, RttEcho, WalkIn
from gpuproof.gateway.sessions import ReadSessionDep, rolled_back
from gpuproof.gateway.state import StateDep, arrived_at, queued_s
from gpuproof.kernels.backend import Opening
from gpuproof.kernels.errors import InvalidParameter
from gpuproof.kernels.memory import LaneOpening
from gpuproof.verifier import lifecycle, transcript
from gpuproof.verifier.outcome import Outcome
from gpuproof.verifier.protocol import Challenge, Commitment, OpeningRequest, Verdict, unrequested_openings
from gpuproof.verifier.wire import (
    ChallengeOut,
    LaneRequestOut,
    OpeningRequestOut,
    RttOut,
    TranscriptOut,
    VerdictOut,
)
from sqlalchemy import func, select
from sqlalchemy.orm import aliased

Opened = aliased(ChallengeRow)  # the open challenges counted against new identities' share

router = APIRouter(tags=["challenges"], dependencies=[Depends(limit_ip)])


def _own(row: ChallengeRow | None, challenge_id: str, provider_id: str) -> ChallengeRow:
    if row is None:
        raise Problem(404, "Not found", f"no challenge {challenge_id}")
    if row.provider_id != provider_id:
        raise Problem(403, "Forbidden", f"challenge {challenge_id} belongs to another provider")
    return row


RTT_HEADER = "X-Gpuproof-Rtt-Probe"
MEAN_INTERVAL_HEADER = "X-Gpuproof-Challenge-Mean-Interval"  # on a 204: the mean gap between rounds, not a time
RTT_ECHO_WINDOW_S = lifecycle.RTT_ECHO_WINDOW_S


def _probe(session, provider_id: str) -> str:  # noqa: ANN001
    """A fresh round-trip probe for this poll's response (the agent echoes it at once)."""
    token = secrets.token_hex(16)
    session.add(RttProbe(token=token, provider_id=provider_id, sent_at=time.time()))
    return token


def _public(row: ChallengeRow) -> dict:
    """What the prover is sent (verifier.protocol.Challenge.public), with the challenge's state (ChallengeOut)."""
    return service.challenge_of(row).public() | {"issued_at": row.issued_at, "state": row.state, "device": None}


def _request_json(row: ChallengeRow) -> dict:
    """The stored opening request's wire form (verifier.protocol.OpeningRequest.public; OpeningRequestOut)."""
    return service.request_of(row).public()


LONG_POLL_RECHECK_S = 1.0  # a waiting poll re-reads its device this often (a job or an update may move a round)


@dataclass
class _Polled:
    """What one look at a device found: its challenge (new or open), or nothing due (with the time of the
    provider's next round, for the waiting poll only: it is never told to the provider), or deferred."""

    kind: str  # "issued", "open", "idle", "deferred"
    answer: dict | None = None
    due_at: float = 0.0
    probe: str | None = None  # the answer's round-trip probe, stored with a challenge in its transaction


def _look(auth, state, provider_id: str, position: int, first: bool, queued: float) -> _Polled:  # noqa: ANN001
    """One look at a device, in one write transaction: its open challenge if it has one, else a new round if
    the provider's is due (every device of the provider challenged at this instant, each with its own
    seed; verifier/schedule.py), else nothing. The provider's device rows are locked first (by id), so
    simultaneous polls, on any number of gateway processes, issue one round and one challenge per device."""
    session = auth.session
    if first:
        auth.claim_nonce()
    devices = session.execute(select(Device).where(Device.provider_id == provider_id).order_by(Device.id)
                              .with_for_update().execution_options(populate_existing=True)).scalars().all()
    # the round's instant: once the write transaction holds its lock (SQLite's one writer; the device rows on
    # PostgreSQL), so that a wait for it under a flood of writes is never counted against the provider
    now = time.time()
    device = next((d for d in devices if d.position == position), None)
    if device is None:
        raise Problem(404, "Not found", f"provider has no device at position {position}")
    if first and service.expire_overdue(session, state.verifier, provider_id, now, asking_device=device.id,
                                        schedule=state.settings.schedule(), grace_s=state.settings.expiry_grace_s):
        state.trust_cache.drop(provider_id)
    open_rows = {row.device_id: row for row in session.execute(
        select(ChallengeRow).where(ChallengeRow.provider_id == provider_id,
                                   ChallengeRow.state.in_(lifecycle.OPEN_STATES))).scalars()}
    mine = open_rows.get(device.id)
    if mine is not None:
        mine.delivered_at = lifecycle.deliver(service.state_of(mine), now).delivered_at
        out = _public(mine) | {"device": device.position}
        if mine.state == "committed" and mine.pairs is not None:
            out["opening_request"] = _request_json(mine)
        if mine.state == "committed" and mine.lanes is not None:
            out["lane_request"] = service.lanes_of(mine).public()  # type: ignore[union-attr]
        probe = _probe(session, provider_id)
        session.commit()
        return _Polled("open", out, probe=probe)
    job_open = session.execute(select(Job.id).where(Job.provider_id == provider_id, Job.final.is_(False))
                               .limit(1)).first() is not None
    last_round = session.execute(select(func.max(ChallengeRow.issued_at))
                                 .where(ChallengeRow.provider_id == provider_id)).scalar()
    policy = state.settings.schedule()
    due_at = lifecycle.round_due_at(device.next_due_at, last_round, job_open, now, policy)
    if due_at is not None:
        session.commit()
        return _Polled("idle", due_at=due_at)
    if first and queued > state.settings.admission_max_wait_s:  # overloaded: defer, never issue one late
        session.commit()
        metrics.CHALLENGES_DEFERRED.inc()
        return _Polled("deferred")
    if _new_identities_full(session, state, provider_id, devices):
        session.commit()
        metrics.CHALLENGES_DEFERRED.inc()
        return _Polled("deferred")
    answer = None
    issued = lifecycle.issue_round([d.id for d in devices], open_rows, now, job_open, policy)
    for d in devices:
        if d.id not in issued.devices:
            continue
        challenge = state.verifier.issue(d.model, now=now, profile_key=d.profile,
                                         shape=state.settings.test_shape(d.profile))
        row = service.store_challenge(provider_id, d.id, challenge)
        session.add(row)
        metrics.CHALLENGES_ISSUED.inc()
        if d.id == device.id:
            row.delivered_at = now
            answer = _public(row) | {"device": d.position}
    for d in devices:
        d.next_due_at = issued.next_due_at
    probe = _probe(session, provider_id)  # in the round's own transaction: no second wait for the write lock
    session.commit()
    return _Polled("issued", answer, probe=probe)


def _new_identities_full(session, state, provider_id: str, devices: list[Device]) -> bool:  # noqa: ANN001
    """Whether a round for this provider must wait because it challenges devices that are new (no passed
    challenge at their current claim: a pass proves only the device and class it was on, so a provider that
    passed once on a cheap device and then claims 64 GPUs is new for those) while the open challenges of new
    devices already fill their share (issue 18: identities cost nothing to make, and each challenge is an
    open row and, answered, a verification). Two shares: GPUPROOF_NEW_DEVICE_OPEN_CHALLENGES_PER_SOURCE for
    the providers registered from one address (an IPv6 /64), and GPUPROOF_NEW_IDENTITY_OPEN_CHALLENGES for
    all together. A source that holds none may start one round beyond the gateway-wide share, up to twice
    it (a hard bound), so identities from one place cannot lock a newcomer elsewhere out of its first round."""
    cap, per_source = state.settings.new_identity_open_challenges, state.settings.new_device_open_challenges_per_source
    if not cap and not per_source:
        return False
    fresh = [d for d in devices if not _device_passed(session, d.id, d.profile)]
    if not fresh:
        return False
    take_turns(session, ADVISORY_NEW_DEVICES)  # rounds of new devices take turns: two counted at once cannot both fit
    source = session.execute(select(Provider.source).where(Provider.id == provider_id)).scalar()
    held_here = session.execute(_held_by_new(Provider.source == source if source is not None
                                             else Provider.id == provider_id)).scalar_one()
    total = session.execute(_held_by_new(None)).scalar_one()
    if held_here == 0:  # a source's first round, unless the gateway already holds twice its share: a hard bound
        return bool(cap) and total + len(fresh) > 2 * cap
    if per_source and held_here + len(fresh) > per_source:
        return True
    return bool(cap) and total + len(fresh) > cap


ADVISORY_NEW_DEVICES = 0x6E657764  # the advisory lock space of new devices' rounds ("newd")


def _held_by_new(where):  # noqa: ANN001, ANN202
    """SELECT the count of open challenges on devices with no pass at their claim (of providers `where`)."""
    passed = select(ChallengeRow.id).where(ChallengeRow.device_id == Opened.device_id,
                                           ChallengeRow.profile == Opened.profile,
                                           ChallengeRow.outcome == Outcome.PASS.value).exists()
    query = select(func.count()).select_from(Opened).where(Opened.state.in_(lifecycle.OPEN_STATES), ~passed)
    if where is not None:
        query = query.join(Provider, Provider.id == Opened.provider_id).where(where)
    return query


def _device_passed(session, device_id: int, profile: str) -> bool:  # noqa: ANN001
    """Whether the device has passed a challenge at this claim (its profile): the device is established."""
    return session.execute(select(ChallengeRow.id).where(ChallengeRow.device_id == device_id,
                                                         ChallengeRow.profile == profile,
                                                         ChallengeRow.outcome == Outcome.PASS.value)
                           .limit(1)).first() is not None


def _quiet_until(state, provider_id: str, position: int) -> float | None:  # noqa: ANN001
    """For a waiting poll, without a write lock: the time until which nothing can change for the device (no
    open challenge, its round not yet due, the minimum gap not yet over), or None when `_look` must run.
    A waiting poll re-checks every second; taking the write lock (SQLite's one writer) each time would make
    every idle device a writer."""
    now = time.time()
    with state.db.reader() as reader:
        device = reader.execute(select(Device.id, Device.next_due_at).where(
            Device.provider_id == provider_id, Device.position == position)).first()
        if device is None:
            return None  # `_look` says why
        if reader.execute(select(ChallengeRow.id).where(ChallengeRow.device_id == device.id,
                                                        ChallengeRow.state.in_(lifecycle.OPEN_STATES))
                          .limit(1)).first() is not None:
            return None
        last_round = reader.execute(select(func.max(ChallengeRow.issued_at))
                                    .where(ChallengeRow.provider_id == provider_id)).scalar()
    return lifecycle.quiet_until(device.next_due_at, last_round, now, state.settings.schedule())


def _answer(auth, provider_id: str, polled: _Polled) -> tuple[str, int]:  # noqa: ANN001
    """Store the round-trip probe of the answer (the agent echoes it at once); (probe, Retry-After)."""
    probe = _probe(auth.session, provider_id)
    auth.session.commit()
    wait = random.randint(3, 8) if polled.kind == "deferred" else 1
    return probe, wait


@router.post("/v1/providers/{provider_id}/challenges", operation_id="next_challenge",
             response_model=ChallengeOut, response_model_exclude_none=True,
             responses={200: {"description": "the device's challenge of a round already issued (an open one)"},
                        201: {"model": ChallengeOut, "description": "a round was issued by this poll: the device's "
                                                                    "challenge in it"},
                        204: {"description": "no challenge for this device now; poll again (with wait_s, at "
                                             "once). The time of the next round is never told: the verifier "
                                             "schedules rounds at unannounced random times"}})
async def next_challenge(provider_id: IdPath, body: NextChallenge, auth: SignedProviderDep, state: StateDep,
                         response: Response, request: Request) -> dict:
    """The device's challenge: an open one if there is one (so an agent can resume after a restart), a new
    round if the provider's is due, else, with `wait_s`, wait for one (a long poll, up to long_poll_max_s;
    the wait holds no worker thread), else 204. 201: a round was issued by this poll; 200: the device's
    challenge of a round already issued. The challenge is timed from the round's instant, so an agent
    keeps a long poll open per device to get it at once."""
    if provider_id != auth.provider.id:
        raise Problem(403, "Forbidden", "a provider can only ask for its own challenges")
    queued = queued_s(request)
    waiter = (provider_id, body.device)
    # one waiting poll per device and process: more would each re-read the database every second for nothing
    # (an agent keeps one open); the others are answered at once
    wait_s = min(body.wait_s, state.settings.long_poll_max_s) if _WAITING[waiter] == 0 else 0.0
    _WAITING[waiter] += 1
    try:
        return await _poll(auth, state, response, request, provider_id, body.device, queued, wait_s)
    finally:
        _WAITING[waiter] -= 1
        if _WAITING[waiter] <= 0:
            del _WAITING[waiter]


_WAITING: Counter[tuple[str, int]] = Counter()  # polls in flight per (provider, device), in this process


async def _poll(auth, state, response: Response, request: Request, provider_id: str, position: int,  # noqa: ANN001
                queued: float, wait_s: float) -> dict:
    """The long poll's loop: look, then (waiting) sleep until something can change for the device."""
    until = time.monotonic() + wait_s
    first = True
    while True:
        if not first and await request.is_disconnected():  # the agent is gone (stopped, restarted): a round
            return Response(status_code=204)  # type: ignore[return-value]  # (a round issued to it would run unheard)
        quiet = None if first else await anyio.to_thread.run_sync(
            functools.partial(_quiet_until, state, provider_id, position))
        if quiet is None:
            polled = await anyio.to_thread.run_sync(
                functools.partial(_look, auth, state, provider_id, position, first, queued))
            first = False
        left = until - time.monotonic()
        if polled.kind != "idle" or left <= 0:
            break
        due = quiet if quiet is not None else polled.due_at
        await anyio.sleep(min(left, LONG_POLL_RECHECK_S, max(0.0, due - time.time())))
    # a challenge's answer leaves at once: its probe was stored with it (between the two, a second write
    # transaction waited for the write lock under a flood of writes, and the challenge's clock ran meanwhile)
    probe, wait = (polled.probe, 1) if polled.probe is not None else \
        await anyio.to_thread.run_sync(functools.partial(_answer, auth, provider_id, polled))
    if polled.answer is None:
        return Response(status_code=204, headers={"Retry-After": str(wait), RTT_HEADER: probe,  # type: ignore[return-value]
                                                  MEAN_INTERVAL_HEADER: f"{state.settings.challenge_interval_s:g}"})
    response.headers[RTT_HEADER] = probe
    response.status_code = status.HTTP_201_CREATED if polled.kind == "issued" else status.HTTP_200_OK
    return polled.answer


@router.post("/v1/providers/{provider_id}/rtt", operation_id="echo_rtt_probe", response_model=RttOut)
def echo_rtt_probe(provider_id: IdPath, body: RttEcho, auth: SignedProviderDep, request: Request) -> dict:
    """Echo the round-trip probe of the last poll response, at once; the gateway times the round trip."""
    session = auth.session
    now = arrived_at(request)
    if provider_id != auth.provider.id:
        raise Problem(403, "Forbidden", "a provider can only echo its own probes")
    auth.claim_nonce()
    probe = session.get(RttProbe, body.probe)
    if probe is None or probe.provider_id != provider_id:
        raise Problem(404, "Not found", f"no probe {body.probe} for this provider")
    probe.rtt_s = lifecycle.echo(body.probe, probe.sent_at, probe.rtt_s, now)
    session.commit()
    return {"probe": body.probe, "rtt_s": probe.rtt_s}


@router.post("/v1/challenges/{challenge_id}/commitment", operation_id="post_commitment",
             response_model=OpeningRequestOut, response_model_exclude_unset=True)
def post_commitment(challenge_id: IdPath, body: CommitmentIn, auth: SignedProviderDep, state: StateDep,
                    request: Request) -> dict:
    """Commit the R roots. The response is the opening request, drawn only after the roots are stored.
    A retry with the same roots gets the same request. The commitment is timed from when its body had
    arrived, not from when a worker thread got to it (queueing under load is the gateway's, not the
    provider's)."""
    session = auth.session
    now = arrived_at(request)
    auth.claim_nonce()
    row = _own(locked(session, ChallengeRow, challenge_id), challenge_id, auth.provider.id)
    step = lifecycle.commit(service.state_of(row), lifecycle.digest(body.roots), now)
    if step.action == "replay":
        return rolled_back(session, _request_json(row))  # a retry: nothing new, not even its nonce
    if step.action == "draw":  # the commitment was stored but the gateway stopped before drawing: draw now
        return _draw(session, state, row)
    challenge = service.challenge_of(row)
    commitment = state.verifier.commit(challenge, [bytes.fromhex(r) for r in body.roots], received_at=now,
                                       rtt_s=service.rtt_allowance(session, auth.provider.id, now))
    row.roots = b"".join(commitment.roots)
    row.received_at, row.rtt_s, row.measured_s = commitment.received_at, commitment.rtt_s, commitment.measured_s
    row.commit_digest, row.state = step.state.commit_digest, step.state.state
    service.log_commitment(session, row)
    session.commit()  # the commitment is stored (and logged) before anything is drawn
    return _draw(session, state, row)


def _draw(session, state, row: ChallengeRow) -> dict:  # noqa: ANN001
    """Draw and store the opening request of a stored commitment, once: under the row's lock, a
    concurrent retry that drew first is answered with its request."""
    fresh = locked(session, ChallengeRow, row.id)
    assert fresh is not None  # challenges are never deleted
    row = fresh
    if lifecycle.draw(service.state_of(row)) is None:
        return rolled_back(session, _request_json(row))
    request = state.verifier.request_openings(service.challenge_of(row), service.commitment_of(row))
    row.pairs = [list(p) for p in request.pairs]
    row.x = request.x.astype("<u4").tobytes()
    row.walk_nonce = request.nonce  # a memory phase's nonce: the walk is timed from this answer
    now = time.time()
    row.nonce_sent_at = now if request.nonce is not None else None
    service.log_opening_request(session, row, now)
    session.commit()
    return _request_json(row)


@router.post("/v1/challenges/{challenge_id}/walk", operation_id="post_walk", response_model=LaneRequestOut)
def post_walk(challenge_id: IdPath, body: WalkIn, auth: SignedProviderDep, state: StateDep,
              request: Request) -> dict:
    """Commit the walk root of spec v2's memory phase (a challenge whose opening request carried a walk
    nonce). The gateway times it from the nonce's answer on its own clock; the response is the lanes to
    open, drawn only after the walk root is stored. A retry with the same root gets the same lanes."""
    session = auth.session
    now = arrived_at(request)
    auth.claim_nonce()
    row = _own(locked(session, ChallengeRow, challenge_id), challenge_id, auth.provider.id)
    step = lifecycle.commit_walk(service.state_of(row), lifecycle.digest(body.walk_root), now)
    if step.action == "replay":
        return rolled_back(session, service.lanes_of(row).public())  # type: ignore[union-attr]
    if step.action == "store":
        assert row.nonce_sent_at is not None
        walk = state.verifier.commit_walk(service.challenge_of(row), bytes.fromhex(body.walk_root),
                                          nonce_sent_at=row.nonce_sent_at, received_at=now,
                                          rtt_s=service.rtt_allowance(session, auth.provider.id, now))
        row.walk_root, row.walk_digest = walk.walk_root, step.state.walk_digest
        row.walk_received_at, row.walk_rtt_s, row.walk_s = walk.received_at, walk.rtt_s, walk.walk_s
        session.commit()  # the walk root is stored before any lane is drawn
        fresh = locked(session, ChallengeRow, challenge_id)
        assert fresh is not None
        row = fresh
    if lifecycle.draw_lanes(service.state_of(row)) is None:  # a concurrent retry drew first
        return rolled_back(session, service.lanes_of(row).public())  # type: ignore[union-attr]
    lanes = state.verifier.draw_lanes(service.challenge_of(row))
    row.lanes = list(lanes.lanes)
    session.commit()
    return lanes.public()


@router.post("/v1/challenges/{challenge_id}/openings", operation_id="post_openings", response_model=VerdictOut,
             response_model_exclude_unset=True)
async def post_openings(challenge_id: IdPath, body: OpeningsIn, auth: SignedProviderDep, state: StateDep,
                        request: Request) -> dict:
    """Open the requested rows; the response is the verdict. A retry with the same openings gets the same
    verdict, counted once. The verdict is judged in the verification pool (gateway/verify_pool.py: threads
    of its own; a freed thread goes to the waiting identity with the fewest running, identities taking
    turns), timed from the
    openings' arrival, so waiting for a turn never makes an answer late."""
    now = arrived_at(request)
    wire = [o.model_dump() for o in body.openings]
    lanes_wire = [o.model_dump() for o in body.lanes] if body.lanes is not None else None
    digest = lifecycle.digest(wire if lanes_wire is None else {"openings": wire, "lanes": lanes_wire})
    loaded = await anyio.to_thread.run_sync(
        functools.partial(_load_for_judging, state, challenge_id, auth.provider.id, digest, now))
    if isinstance(loaded, dict):
        return loaded  # a retry: the same verdict, nothing stored
    challenge, commitment, opening_request, walk, lanes, new = loaded
    if (wrong := unrequested_openings(opening_request.pairs, [(o["round"], o["row"]) for o in wire])) is not None:
        raise Problem(422, "Invalid request", f"openings: {wrong}")  # before any verification, nothing stored

    def judge() -> Verdict:
        try:
            openings = [Opening.from_json(o) for o in wire]
            lane_openings = [LaneOpening.from_json(o) for o in lanes_wire or ()]
        except (InvalidParameter, ValueError) as exc:
            raise Problem(422, "Invalid request", f"openings: {exc}") from None
        started = time.perf_counter()
        verdict = state.verifier.judge(challenge, commitment, opening_request, openings, walk, lanes,
                                       lane_openings)
        metrics.VERIFY_SECONDS.observe(time.perf_counter() - started)
        return verdict

    if state.verify_pool.judging(challenge_id) - {digest}:  # other openings of it are being verified now
        raise Problem(409, "Already being judged", f"other openings of challenge {challenge_id} are being judged "
                      "now; a challenge's first answer is final (a retry of the same openings waits for its verdict)")
    verdict = await state.verify_pool.once((challenge_id, digest), auth.provider.id, new, judge)
    return await anyio.to_thread.run_sync(
        functools.partial(_store_verdict, auth, state, challenge_id, wire, lanes_wire, digest, now, verdict,
                          commitment))


def _load_for_judging(state, challenge_id: str, provider_id: str, digest: str,  # noqa: ANN001
                      now: float) -> dict | tuple[Challenge, Commitment, OpeningRequest, Any, Any, bool]:
    """What judging needs, read outside the write lock (verification can take a while): the stored verdict
    of a retry, else the challenge, commitment, opening request, the memory phase's walk and lanes (None
    without one) and whether its device is new (no passed challenge at its claim yet: gateway/verify_pool.py
    gives new identities fewer verification threads)."""
    with state.db.reader() as reader:
        row = _own(reader.get(ChallengeRow, challenge_id), challenge_id, provider_id)
        if lifecycle.openings(service.state_of(row), digest, now) == "replay":
            return row.verdict
        new = not _device_passed(reader, row.device_id, row.profile)
        challenge, commitment = service.challenge_of(row), service.commitment_of(row)
        if commitment.rtt_s == 0.0:
            # No probe of the provider's had been echoed when its commitment came: a new provider's first
            # round, whose only probe is the round's own, echoed beside the proving (agent/daemon.py), can
            # commit before its echo is recorded. The allowance is then taken now, from the probes sent
            # before the commitment came, echoed since. No more than a provider gets by echoing before it
            # commits (a late echo only raises the allowance to its cap, which the bound counts either way).
            late = service.rtt_allowance(reader, provider_id, commitment.received_at)
            if late > 0.0:
                commitment = state.verifier.commit(challenge, list(commitment.roots),
                                                   received_at=commitment.received_at, rtt_s=late)
        return (challenge, commitment, service.request_of(row), service.walk_of(row), service.lanes_of(row), new)


def _store_verdict(auth, state, challenge_id: str, wire: list[dict], lanes_wire: list[dict] | None,  # noqa: ANN001
                   digest: str, now: float, verdict: Verdict, commitment: Commitment) -> dict:
    session = auth.session
    auth.claim_nonce()
    # The lock order (gateway/db.py): its device first, as a pass writes the device's stored class
    # (service.store_verified) after the challenge and the log head; a poll locks the devices, then challenges
    device_id = session.execute(select(ChallengeRow.device_id).where(ChallengeRow.id == challenge_id)).scalar_one()
    locked(session, Device, device_id)
    stored = locked(session, ChallengeRow, challenge_id)
    assert stored is not None
    on_record = stored.verdict
    try:  # again under the lock: a concurrent retry may have judged first (answer with what is on record)
        again = lifecycle.openings(service.state_of(stored), digest, now)
    except lifecycle.LifecycleError:
        session.rollback()
        raise
    if again == "replay":
        session.rollback()
        return on_record  # (read before: a rollback expires the row)
    stored.openings = wire
    stored.lane_openings = lanes_wire
    stored.rtt_s, stored.measured_s = commitment.rtt_s, commitment.measured_s  # as judged (_load_for_judging)
    body_json = verdict.to_json()
    service.record_verdict(session, stored, body_json, now, openings_digest=digest, profiles=state.verifier.profiles)
    session.commit()
    state.trust_cache.drop(stored.provider_id)
    reason = verdict.failure.reason if verdict.failure else "none"
    metrics.VERDICTS.labels(outcome=verdict.outcome, timing=verdict.timing, reason=reason).inc()
    return body_json


@router.get("/v1/challenges/{challenge_id}/transcript", operation_id="get_transcript",
            response_class=Response,
            responses={200: {"model": TranscriptOut, "description": "the transcript, as canonical JSON: its "
                             "SHA-256 is the verdict log entry's transcript_sha256"}})
def get_transcript(challenge_id: IdPath, session: ReadSessionDep) -> Response:
    """The full evidence of a judged challenge (gpuproof.transcript/1), for `gpuproof verify-transcript`."""
    row = session.get(ChallengeRow, challenge_id)
    if row is None:
        raise Problem(404, "Not found", f"no challenge {challenge_id}")
    if row.state != "judged" or row.openings is None:
        raise Problem(409, "Not judged", f"challenge {challenge_id} is {row.state}; its transcript comes with "
                      "its verdict" + (" (it timed out: no openings to show)" if row.state == "judged" else ""))
    return Response(transcript.encode(service.transcript_of(row)), media_type="application/json")
