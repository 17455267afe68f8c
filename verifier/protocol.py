"""The challenge protocol, verifier side (docs/protocol.md, "Protocol"): issue, commit, open, check.

Pure: the caller passes its clock readings (`now`, `received_at`) and its round-trip estimate, and
stores what comes back; randomness comes from `secrets` unless a test injects a source.

1. issue    fresh 32-byte seed, sizes for the claimed profile, thresholds, deadline, challenge id.
2. commit   the prover's R roots; measured time = received_at - issued_at - rtt allowance.
3. open     only after the commitment is stored: s (round, row) pairs uniform over all rows of all
            rounds, and a Freivalds vector x, from the CSPRNG.
4. check    each opened row: its subtree root and audit path must give the committed root_r, and
            row . x == A_r[row] . y exactly (y = B.T @ x, once per challenge).
5. verdict  correctness, timing class, the stated cheating bound, reasons.

Spec v2 on a profiled card adds a memory phase (docs/protocol.md, "Spec v2: memory phase"; the rules are
verifier/memory.py's): the opening request carries the walk's nonce, drawn with it after the roots are
stored; the walk root is timed from the nonce's sending (`commit_walk`); the lanes to open are drawn only
after it is stored (`draw_lanes`); `judge` checks them and puts the memory finding in the verdict.
"""

from __future__ import annotations

import dataclasses
import math
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from gpuproof.kernels.backend import Opening
from gpuproof.kernels.errors import InvalidParameter, OpeningRejected
from gpuproof.kernels.memory import NONCE_BYTES, LaneOpening, MemoryPlan
from gpuproof.kernels.merkle import HASH_BYTES
from gpuproof.kernels.spec import SPEC, ChallengeParams, definition, prev_root_of
from gpuproof.verifier import freivalds
from gpuproof.verifier import memory as vm
from gpuproof.verifier.ids import check_id
from gpuproof.verifier.openings import check_row_inclusion
from gpuproof.verifier.outcome import Correctness, Outcome, Timing, passed
from gpuproof.verifier.profiles import (
    UNPROFILED,
    UNPROFILED_KEY,
    Profile,
    best_match,
    load_profiles,
    lookup,
    slower_substitute,
)
from gpuproof.verifier.timing import Thresholds, TimingConfig, classify, format_rate, size_challenge, thresholds

DEFAULT_SPOT_CHECKS = 32


@dataclass(frozen=True)
class VerifierConfig:
    """`spec`: the challenge spec of new challenges (docs/protocol.md, "Versioning"); challenges already
    issued are judged under the spec they name, whatever this says."""

    spot_checks: int = DEFAULT_SPOT_CHECKS
    timing: TimingConfig = field(default_factory=TimingConfig)
    spec: str = SPEC

    def __post_init__(self) -> None:
        if not isinstance(self.spot_checks, int) or not 1 <= self.spot_checks <= 4096:
            raise InvalidParameter("spot_checks", f"must be an integer in 1..4096, got {self.spot_checks!r}")
        definition(self.spec)


@dataclass(frozen=True)
class Challenge:
    """An issued challenge: what the prover gets (id, params) and what the verifier keeps (the rest)."""

    challenge_id: str
    params: ChallengeParams
    device_model: str
    profile: str
    issued_at: float
    thresholds: Thresholds
    spot_checks: int
    memory: MemoryPlan | None = None  # the memory phase's plan (spec v2 on a profiled card), fixed at issue

    def __post_init__(self) -> None:
        check_id(self.challenge_id, "challenge_id")
        if self.memory is not None and self.memory.params != self.params:
            raise InvalidParameter("memory", "the memory plan is another challenge's")
        if not isinstance(self.issued_at, int | float) or not math.isfinite(self.issued_at):
            raise InvalidParameter("issued_at", "expected a finite time")

    def public(self) -> dict[str, Any]:
        """What the prover is sent."""
        out = {"challenge_id": self.challenge_id, **self.params.to_dict(), "deadline_s": self.thresholds.deadline_s}
        return out | ({"memory": self.memory.to_dict()} if self.memory is not None else {})


@dataclass(frozen=True)
class Commitment:
    """The prover's roots, as received, with the verifier's own timing of them."""

    challenge_id: str
    roots: tuple[bytes, ...]
    received_at: float
    rtt_s: float
    measured_s: float


@dataclass(frozen=True)
class OpeningRequest:
    """Drawn after the commitment is stored: which rows to open, and the Freivalds vector."""

    challenge_id: str
    pairs: tuple[tuple[int, int], ...]
    x: np.ndarray = field(repr=False)
    nonce: bytes | None = None  # the walk's nonce (a challenge with a memory phase), drawn with the pairs

    def __post_init__(self) -> None:
        if self.nonce is not None and len(self.nonce) != NONCE_BYTES:
            raise InvalidParameter("nonce", f"the walk's nonce has {len(self.nonce)} bytes, want {NONCE_BYTES}")

    def public(self) -> dict[str, Any]:
        out = {"challenge_id": self.challenge_id, "pairs": [list(p) for p in self.pairs]}
        return out | ({"walk_nonce": self.nonce.hex()} if self.nonce is not None else {})


@dataclass(frozen=True)
class WalkCommitment:
    """The prover's walk root, as received, with the verifier's own timing of the walk: `walk_s` is from the
    nonce's sending (`nonce_sent_at`, the opening request's answer) to the walk root's arrival, less the
    round-trip allowance (capped by MemoryConfig.max_rtt_allowance_s)."""

    challenge_id: str
    walk_root: bytes
    nonce_sent_at: float
    received_at: float
    rtt_s: float
    walk_s: float


@dataclass(frozen=True)
class LaneRequest:
    """Drawn after the walk root is stored: the lanes to open, uniform with repeats (verifier.memory)."""

    challenge_id: str
    lanes: tuple[int, ...]

    def public(self) -> dict[str, Any]:
        return {"challenge_id": self.challenge_id, "lanes": list(self.lanes)}


@dataclass(frozen=True)
class Failure:
    round: int
    row: int
    reason: str
    detail: str


@dataclass(frozen=True)
class Verdict:
    """The outcome of one challenge, with everything needed to explain it."""

    challenge_id: str
    outcome: Outcome
    correctness: Correctness
    failure: Failure | None
    timing: Timing
    measured_s: float
    expected_s: float
    measured_tops: float
    best_match: str
    claimed_profile: str
    cheat_pass_probability: float
    cheat_model: Mapping[str, Any]
    reasons: tuple[str, ...]
    memory: vm.MemoryFinding | None = None  # the memory phase's finding (spec v2 on a profiled card)

    def to_json(self) -> dict[str, Any]:
        return {
            "challenge_id": self.challenge_id, "outcome": str(self.outcome), "correctness": str(self.correctness),
            "failure": None if self.failure is None else vars(self.failure),
            "timing": str(self.timing), "measured_s": self.measured_s, "expected_s": self.expected_s,
            "measured_tops": self.measured_tops, "best_match": self.best_match,
            "claimed_profile": self.claimed_profile, "cheat_pass_probability": self.cheat_pass_probability,
            "cheat_model": dict(self.cheat_model), "reasons": list(self.reasons),
        } | ({"memory": self.memory.to_json()} if self.memory is not None else {})


def cheat_bound(params: ChallengeParams, profile: Profile, limits: Thresholds, spot_checks: int,
                profiles: Mapping[str, Profile], rtt_allowance_s: float = 0.0) -> tuple[float, dict[str, Any]]:
    """The worst-case chance that a provider without the claimed card passed this challenge.

    The longest a prover can take and be accepted is slow_s plus the largest RTT allowance (it can
    inflate its round trips up to the cap), so the slowest accepted rate is W / (slow_s + cap). What a
    substitute card can do is capped by its physical peak (`Profile.rate_peak`: the datasheet dense rate),
    never by our estimate of an honest card's efficiency. Two ways to pass without the claimed card:

    - a *slower card skipping rows*: a card whose peak P is below the slowest accepted rate computes at
      most f = P * (slow_s + cap) / W of the rows in time; the s opened rows are uniform over all rows,
      so all are computed rows with probability at most f**s, and each uncomputed one passes Freivalds
      with probability at most 2**-32: `slower_card_bound` = f**s + s * 2**-32 for the fastest such card
      (`substitute`).
    - a *lesser card that is not slower*: a card whose peak reaches the slowest accepted rate (<=) but
      that has less memory or a lower peak than claimed (an H100 SXM for an H200, an A100 40GB for an
      A100 80GB) computes every row in time; timing cannot separate it and gpuproof/1 does not challenge
      memory, so it passes with probability up to 1.

    The stated probability is the worst case over both: 1.0 when any lesser card is indistinguishable
    (`worst_case_substitute` names the least of them), else the slower-card bound. An unprofiled claim
    claims no class; its bound is for a prover that computed half the rows (looking twice as fast).
    """
    work = params.operations
    allowed = limits.slow_s + rtt_allowance_s
    slowest_accepted = work / allowed
    substitute = slower_substitute(profile, slowest_accepted, profiles) if profile.is_profiled else None
    if substitute is None:  # nothing that slow on file: state the bound for a card half as fast as needed
        fraction, name = 0.5, "a card half as fast as needed"
    else:
        fraction, name = min(1.0, substitute.rate_peak / slowest_accepted), substitute.key
    slower_bound = min(1.0, fraction**spot_checks + spot_checks * 2.0**-freivalds.X_BITS)
    # Every card, slower on average or not, whose physical peak reaches the slowest accepted rate.
    overlap = sorted(p.key for p in profiles.values()
                     if profile.is_profiled and p.key != profile.key and p.rate_peak >= slowest_accepted)
    lesser = [k for k in overlap if profiles[k].is_lesser_than(profile)]
    worst: str | None
    if lesser:
        worst = min(lesser, key=lambda k: (profiles[k].int8_tops, profiles[k].memory_gib, k))
        bound, case = 1.0, "lesser-card"
        statement = (f"a lesser card that is not slower passes with probability up to 1: {', '.join(lesser)} "
                     f"reach the slowest accepted rate of {profile.key} ({format_rate(slowest_accepted)}) "
                     f"with less memory or a lower peak, and timing cannot separate them (worst: {worst}); "
                     f"a slower card skipping rows ({name}) passes with probability at most {slower_bound:.2g}")
    elif profile.is_profiled:
        worst, bound, case = (None if substitute is None else substitute.key), slower_bound, "slower-card"
        statement = (f"no lesser card reaches the slowest accepted rate of {profile.key} "
                     f"({format_rate(slowest_accepted)}); a slower card skipping rows ({name}) passes with "
                     f"probability at most {slower_bound:.2g}")
    else:
        worst, bound, case = None, slower_bound, "no-class-claimed"
        statement = (f"unprofiled: no class is claimed; a prover that computed half the rows passes with "
                     f"probability at most {slower_bound:.2g}")
    return bound, {"substitute": name, "max_fraction_of_rows": fraction, "slower_card_bound": slower_bound,
                   "spot_checks": spot_checks, "freivalds_error_per_row": 2.0**-freivalds.X_BITS,
                   "ceiling": "datasheet dense int8 peak", "slowest_accepted_tops": slowest_accepted / 1e12,
                   "indistinguishable_by_timing": overlap, "lesser_indistinguishable": lesser,
                   "worst_case": case, "worst_case_substitute": worst, "statement": statement}


class Verifier:
    """Issues and judges challenges. Holds configuration and profiles only; no state between calls."""

    def __init__(self, config: VerifierConfig | None = None,
                 profiles: Mapping[str, Profile] | None = None,
                 random_bytes: Callable[[int], bytes] = secrets.token_bytes,
                 memory_config: vm.MemoryConfig | None = None) -> None:
        self.config = config or VerifierConfig()
        self.memory_config = memory_config or vm.MemoryConfig()
        self.profiles = load_profiles() if profiles is None else profiles
        self._random_bytes = random_bytes

    # 1. issue ---------------------------------------------------------------------------------
    def issue(self, device_model: str, *, now: float, profile_key: str | None = None,
              shape: tuple[int, int, int, int] | None = None, spec: str | None = None) -> Challenge:
        """A fresh challenge for a device claimed to be `device_model` (any string; unknown is fine), in
        `spec` (by default the configured spec of new challenges, gpuproof/2).

        `shape` (m, n, k, rounds) overrides the sizing, for tests, demos and simulations; the thresholds
        follow it. A challenge with a memory phase (`verifier.memory.needs_memory_phase`) gets its plan, and
        without `shape` at least the rounds its table needs (`verifier.memory.size_for_memory`).
        """
        if not isinstance(device_model, str) or not device_model.strip() or len(device_model) > 200:
            raise InvalidParameter("device_model", "expected a model name of 1 to 200 characters")
        spec = self.config.spec if spec is None else spec
        definition(spec)
        profile = self._profile(profile_key, device_model)
        seed = self._random_bytes(32)
        params = size_challenge(seed, profile, self.config.timing, spec) if shape is None \
            else ChallengeParams(seed, *shape, spec=spec)
        plan = None
        limits = thresholds(params, profile, self.config.timing)
        if vm.needs_memory_phase(spec, profile):
            if shape is None:
                params = vm.size_for_memory(params, profile, self.memory_config)
                limits = thresholds(params, profile, self.config.timing)
            plan = vm.plan_memory(params, profile, self.memory_config)
            # the memory phase (table fill, walk, lane openings) gets its own walk deadline on top of the
            # compute phase's: the challenge's deadline is for the last answer, the openings
            walk = vm.walk_thresholds(plan, profile, self.memory_config)
            limits = dataclasses.replace(limits, deadline_s=limits.deadline_s + walk.deadline_s)
        return Challenge(challenge_id=self._random_bytes(16).hex(), params=params, device_model=device_model,
                         profile=profile.key, issued_at=float(now), thresholds=limits,
                         spot_checks=self.config.spot_checks, memory=plan)

    def profile_of(self, challenge: Challenge) -> Profile:
        return self._profile(challenge.profile, challenge.device_model)

    def _profile(self, key: str | None, device_model: str) -> Profile:
        """The profile stored with a device or challenge; "unprofiled" stays unprofiled (it is no key of
        the profiles file, and a name profiled since keeps the thresholds it was issued with); a key
        missing from the file (or none) is looked up by name."""
        if key == UNPROFILED_KEY:
            return UNPROFILED
        return (self.profiles.get(key) if key else None) or lookup(device_model, self.profiles)

    # 2. commit --------------------------------------------------------------------------------
    def commit(self, challenge: Challenge, roots: Sequence[bytes], *, received_at: float,
               rtt_s: float = 0.0) -> Commitment:
        """Record the prover's roots with the verifier's timing; the roots' shape is checked here."""
        roots = tuple(roots)
        if len(roots) != challenge.params.rounds:
            raise InvalidParameter("roots", f"commitment has {len(roots)} roots, want {challenge.params.rounds}")
        for i, r in enumerate(roots):
            if not isinstance(r, bytes) or len(r) != HASH_BYTES:
                raise InvalidParameter("roots", f"root {i} is not a 32-byte hash")
        if not (isinstance(rtt_s, int | float) and 0 <= rtt_s < 60):
            raise InvalidParameter("rtt_s", f"must be in [0, 60) seconds, got {rtt_s!r}")
        # A prover can only make its round trips look slower (by answering late), never faster: the
        # allowance is capped so that this buys it at most max_rtt_allowance_s (counted in the bound).
        rtt = min(float(rtt_s), self.config.timing.max_rtt_allowance_s)
        measured = max(0.0, float(received_at) - challenge.issued_at - rtt)
        return Commitment(challenge.challenge_id, roots, float(received_at), rtt, measured)

    # 3. open ----------------------------------------------------------------------------------
    def request_openings(self, challenge: Challenge, commitment: Commitment) -> OpeningRequest:
        """Draw the rows to open and x. Call only after the commitment is durably stored."""
        if commitment.challenge_id != challenge.challenge_id:
            raise InvalidParameter("commitment", "belongs to another challenge")
        p = challenge.params
        total = p.rounds * p.m
        pairs = [divmod(self._randbelow(total), p.m) for _ in range(challenge.spot_checks)]
        x = freivalds.draw_x(p.n, self._random_bytes)
        nonce = self._random_bytes(NONCE_BYTES) if challenge.memory is not None else None
        return OpeningRequest(challenge.challenge_id, tuple((int(r), int(i)) for r, i in pairs), x, nonce)

    # 3b. the memory phase ---------------------------------------------------------------------
    def commit_walk(self, challenge: Challenge, walk_root: bytes, *, nonce_sent_at: float, received_at: float,
                    rtt_s: float = 0.0) -> WalkCommitment:
        """Record the prover's walk root with the verifier's timing of the walk: from `nonce_sent_at` (when
        the opening request with the nonce was answered) to `received_at`, less the round-trip allowance
        (capped: a prover can only make its round trips look slower, and the cap is in the bound)."""
        if challenge.memory is None:
            raise InvalidParameter("walk_root", f"challenge {challenge.challenge_id} has no memory phase")
        if not isinstance(walk_root, bytes) or len(walk_root) != HASH_BYTES:
            raise InvalidParameter("walk_root", "is not a 32-byte hash")
        if not (isinstance(rtt_s, int | float) and 0 <= rtt_s < 60):
            raise InvalidParameter("rtt_s", f"must be in [0, 60) seconds, got {rtt_s!r}")
        rtt = min(float(rtt_s), self.memory_config.max_rtt_allowance_s)
        walk_s = max(0.0, float(received_at) - float(nonce_sent_at) - rtt)
        return WalkCommitment(challenge.challenge_id, walk_root, float(nonce_sent_at), float(received_at), rtt,
                              walk_s)

    def draw_lanes(self, challenge: Challenge) -> LaneRequest:
        """The lanes to open: `plan.opened` uniform draws. Call only after the walk root is durably stored."""
        if challenge.memory is None:
            raise InvalidParameter("lanes", f"challenge {challenge.challenge_id} has no memory phase")
        plan = challenge.memory
        return LaneRequest(challenge.challenge_id, tuple(self._randbelow(plan.lanes) for _ in range(plan.opened)))

    def _randbelow(self, bound: int) -> int:
        """Uniform in [0, bound) from the byte source, by rejection (no modulo bias)."""
        bits = max(1, (bound - 1).bit_length())
        nbytes = (bits + 7) // 8
        while True:
            value = int.from_bytes(self._random_bytes(nbytes), "little") & ((1 << bits) - 1)
            if value < bound:
                return value

    # 4-5. check and verdict -------------------------------------------------------------------
    def judge(self, challenge: Challenge, commitment: Commitment, request: OpeningRequest,
              openings: Sequence[Opening], walk: WalkCommitment | None = None, lanes: LaneRequest | None = None,
              lane_openings: Sequence[LaneOpening] = ()) -> Verdict:
        """Check every requested opening and give the verdict (never raises on a bad opening).

        A challenge with a memory phase is judged on its walk too (`walk`, `lanes` and the opened lanes,
        verifier.memory.judge_memory): an opened lane that does not check fails correctness (reason
        "memory:<code>"), a walk not in time fails the verdict, and the finding is the verdict's `memory`."""
        p = challenge.params
        profile = self.profile_of(challenge)
        failure = self._first_failure(challenge, commitment, request, openings)
        finding = None
        if challenge.memory is not None:
            finding = self._memory_finding(challenge, profile, commitment, request, walk, lanes, lane_openings,
                                           failure)
            if failure is None and finding.failure is not None:
                failure = Failure(-1, -1, f"memory:{finding.failure}", finding.reasons[0])
        timing = classify(commitment.measured_s, challenge.thresholds, profile)
        rate = p.operations / max(commitment.measured_s, 1e-9)
        match = best_match(rate, self.profiles)
        bound, model = cheat_bound(p, profile, challenge.thresholds, challenge.spot_checks, self.profiles,
                                   self.config.timing.max_rtt_allowance_s)
        reasons = []
        if failure is None:
            reasons.append(f"all {len(request.pairs)} opened rows are committed and exact")
        else:
            reasons.append(f"round {failure.round} row {failure.row}: {failure.reason}: {failure.detail}")
        t = challenge.thresholds
        speed = f"measured {commitment.measured_s:.3f} s ({format_rate(rate)})"
        reasons.append({
            Timing.CONSISTENT: f"{speed}, inside [{t.fast_s:.3f}, {t.slow_s:.3f}] s for {profile.key}",
            Timing.SLOWER: f"{speed}: slower than any honest {profile.key} (limit {t.slow_s:.3f} s); "
                           f"the rate matches {match.key}",
            Timing.FASTER: f"{speed}: faster than any {profile.key} (limit {t.fast_s:.3f} s); "
                           f"the rate matches {match.key}, so the model is misreported",
            Timing.TIMEOUT: f"{speed}: past the deadline of {t.deadline_s:.3f} s",
            Timing.UNPROFILED: f"{speed} on an unprofiled device; its rate matches {match.key}",
        }[timing])
        reasons.append(f"cheat bound {bound:.2g}: {model['statement']}")
        correctness = Correctness.PASS if failure is None else Correctness.FAIL
        memory = None
        if finding is not None:
            memory = vm.MEMORY_PASS if finding.passed else vm.MEMORY_FAIL
            reasons.append(_memory_sentence(finding))
        return Verdict(challenge_id=challenge.challenge_id,
                       outcome=Outcome.PASS if passed(correctness, timing, memory) else Outcome.FAIL,
                       correctness=correctness, failure=failure, timing=timing,
                       measured_s=commitment.measured_s, expected_s=t.expected_s, measured_tops=rate / 1e12,
                       best_match=match.key, claimed_profile=profile.key, cheat_pass_probability=bound,
                       cheat_model=model, reasons=tuple(reasons), memory=finding)

    def _memory_finding(self, challenge: Challenge, profile: Profile, commitment: Commitment,
                        request: OpeningRequest, walk: WalkCommitment | None, lanes: LaneRequest | None,
                        lane_openings: Sequence[LaneOpening], failure: Failure | None) -> vm.MemoryFinding:
        plan = challenge.memory
        assert plan is not None
        if failure is not None:  # the rows failed first: a made-up answer costs the verifier no lane re-walks
            skipped = vm.MemoryRejected("not-checked", "the opened rows failed first; the lanes were not checked")
            walk_s = walk.walk_s if walk is not None else 0.0
            return vm.memory_finding(plan, profile, skipped, walk_s, self.memory_config, self.profiles)
        if walk is None or lanes is None or request.nonce is None:
            missing = vm.MemoryRejected("missing-lane", "no walk root, nonce or lane request on record")
            walk_s = walk.walk_s if walk is not None else \
                2 * vm.walk_thresholds(plan, profile, self.memory_config).deadline_s  # never walked: a timeout
            return vm.memory_finding(plan, profile, missing, walk_s, self.memory_config, self.profiles)
        return vm.judge_memory(plan, profile, commitment.roots, request.nonce, walk.walk_root, lanes.lanes,
                               lane_openings, walk.walk_s, self.memory_config, self.profiles)

    def timeout(self, challenge: Challenge, now: float, committed: bool = False, requested: bool = False,
                start_window_s: float | None = None) -> Verdict:
        """The verdict of a challenge whose deadline passed without a commitment (or without openings).

        No commitment, or a commitment whose opening request was never drawn: correctness "unchecked", a
        timeout: a provider that goes silent is unreliable, not a cheater. But a provider that committed
        and then saw which rows would be opened (`requested`) and went silent "withheld" them: aborting is
        what a prover whose rows are wrong would do, so it is judged a correctness failure, weighed as one
        (docs/protocol.md, "Trust score"); otherwise aborting would be cheaper than failing. With
        `start_window_s`, the device never picked the challenge up within that window: missed.
        """
        p = challenge.params
        elapsed = max(0.0, float(now) - challenge.issued_at)
        profile = self.profile_of(challenge)
        bound, model = cheat_bound(p, profile, challenge.thresholds, challenge.spot_checks, self.profiles,
                                   self.config.timing.max_rtt_allowance_s)
        limit = f"{challenge.thresholds.deadline_s:.3f} s"
        if committed and requested:
            failure = Failure(-1, -1, "withheld", f"the opening request was sent, but no openings came before "
                                                  f"the deadline of {limit}")
            reasons = (f"withheld: committed, was told which rows to open, and sent no openings within {limit} "
                       f"(waited {elapsed:.3f} s); judged as a correctness failure",)
            correctness = Correctness.FAIL
        elif start_window_s is not None:
            failure = Failure(-1, -1, "timeout", f"not picked up within the start window of {start_window_s:g} s")
            reasons = (f"missed: the device did not pick its scheduled challenge up within {start_window_s:g} s "
                       f"(waited {elapsed:.3f} s)",)
            correctness = Correctness.UNCHECKED
        else:
            what = "openings" if committed else "commitment"
            failure = Failure(-1, -1, "timeout", f"no {what} before the deadline of {limit}")
            reasons = (f"no {what} within {limit} (waited {elapsed:.3f} s)",)
            correctness = Correctness.UNCHECKED
        return Verdict(challenge_id=challenge.challenge_id, outcome=Outcome.FAIL, correctness=correctness,
                       failure=failure, timing=Timing.TIMEOUT, measured_s=elapsed,
                       expected_s=challenge.thresholds.expected_s, measured_tops=0.0, best_match="",
                       claimed_profile=profile.key, cheat_pass_probability=bound, cheat_model=model,
                       reasons=reasons)

    def _first_failure(self, challenge: Challenge, commitment: Commitment, request: OpeningRequest,
                       openings: Sequence[Opening]) -> Failure | None:
        p = challenge.params
        if request.challenge_id != challenge.challenge_id or commitment.challenge_id != challenge.challenge_id:
            return Failure(-1, -1, "wrong-challenge", "commitment, request or challenge ids differ")
        by_pair: dict[tuple[int, int], Opening] = {}
        for o in openings:
            by_pair.setdefault((o.round, o.row), o)
        # Cheapest first, so that a made-up answer costs the verifier less than an honest one (issue 18):
        # every row's presence, length and path (hashes), then a few columns of every row exactly (a few
        # B rows), and only then y = B.T x (all of B) and the Freivalds test of each row.
        opened: list[Opening] = []
        for r, i in request.pairs:
            found = by_pair.get((r, i))
            if found is None:
                return Failure(r, i, "missing", "the requested row was not opened")
            try:
                check_row_inclusion(p, commitment.roots, found)
            except OpeningRejected as exc:
                return Failure(r, i, exc.reason, exc.detail)
            opened.append(found)
        columns = freivalds.spot_columns(p, request.x)
        rows_a = []
        for o in opened:
            a = freivalds.a_row(p, o.round, prev_root_of(commitment.roots, o.round), o.row)
            want = freivalds.column_values(p, a, columns)
            got = np.asarray(o.values, dtype=np.int64)[columns]
            if (bad := np.flatnonzero(got != want)).size:
                c = int(bad[0])
                return Failure(o.round, o.row, "wrong-value",
                               f"wrong value at column {columns[c]}: got {int(got[c])}, want {int(want[c])}")
            rows_a.append(a)
        if not opened:
            return None
        y = freivalds.y_vector(p, request.x)
        for o, a in zip(opened, rows_a, strict=True):
            r, i = o.round, o.row
            if not freivalds.row_passes(o.values, request.x, a, y):
                wrong = freivalds.first_wrong_column(p, o.values, a)
                detail = ("row . x != A_r[row] . y" if wrong is None else
                          f"wrong value at column {wrong[0]}: got {wrong[1]}, want {wrong[2]}")
                return Failure(r, i, "wrong-value", detail)
        return None


def _memory_sentence(finding: vm.MemoryFinding) -> str:
    """The memory finding in one sentence: the walk's figure against its limit, capacity and bandwidth class,
    and the stated pass probability of the best cheaper substitute."""
    lanes = "the opened lanes check" if finding.failure is None else f"an opened lane failed ({finding.failure})"
    verdict = "memory phase passed" if finding.passed else "memory phase FAILED"
    return (f"{verdict}: {lanes}; walk {finding.walk_s:.3f} s ({finding.walk_gbs:.3g} GB/s, slow limit "
            f"{finding.limits.slow_s:.3f} s = {finding.slow_limit_gbs:.3g} GB/s): {finding.walk_class}; capacity "
            f"{finding.capacity} (table {finding.table_bytes / vm.GIB:.3g} GiB; a card with less memory, "
            f"{finding.capacity_substitute or 'none profiled'}, passes with probability at most "
            f"{finding.capacity_pass_probability:.2g}); bandwidth class {finding.bandwidth_class} (a card with "
            f"less bandwidth, {finding.bandwidth_substitute or 'none profiled'}, passes with probability at most "
            f"{finding.bandwidth_pass_probability:.2g})")


def unrequested_openings(pairs: Sequence[tuple[int, int]], opened: Sequence[tuple[int, int]]) -> str | None:
    """Why openings are not exactly (some of) the requested rows, each once, or None when they are. Openings
    answer the request and nothing else: a row nobody asked for would be stored with the transcript (junk
    the gateway keeps for every reader), and a row sent twice is two answers to one question. A requested
    row left out is no wire error: the verdict fails it (`missing`)."""
    wanted = {(int(r), int(i)) for r, i in pairs}
    seen: set[tuple[int, int]] = set()
    for r, i in opened:
        if (r, i) not in wanted:
            return f"round {r}, row {i} was not requested (open exactly the requested pairs)"
        if (r, i) in seen:
            return f"round {r}, row {i} is opened twice (open each requested pair once)"
        seen.add((r, i))
    return None
