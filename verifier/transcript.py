"""Challenge transcripts: the evidence a renter re-checks offline (docs/protocol.md, "Evidence").

A transcript (JSON, version "gpuproof.transcript/1") holds the parameters and seed, the thresholds fixed
at issue, the roots with the verifier's timing of them, the opened pairs and x, every opened row with its
audit path, and the verdict; for a challenge with a memory phase (spec v2 on a profiled card) a "memory"
section too: the plan, the walk's nonce and root with the verifier's timing of the walk, the lanes drawn and
every opened lane with the leaves it read and their paths. `recheck` re-runs every check from those and
compares with the recorded verdict field by field. Bytes are hex, once, here at the edge; every field is validated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from gpuproof.kernels.backend import Opening
from gpuproof.kernels.errors import GpuproofError, InvalidParameter
from gpuproof.kernels.memory import LaneOpening, MemoryPlan
from gpuproof.kernels.spec import SPEC_V1, SPECS, ChallengeParams
from gpuproof.verifier import evidence
from gpuproof.verifier.protocol import (
    Challenge,
    Commitment,
    LaneRequest,
    OpeningRequest,
    Verdict,
    Verifier,
    WalkCommitment,
)
from gpuproof.verifier.timing import Thresholds

VERSION = "gpuproof.transcript/1"


class TranscriptError(GpuproofError):
    """A transcript is malformed; the message names the field."""


def build(challenge: Challenge, commitment: Commitment, request: OpeningRequest,
          openings: Sequence[Opening], verdict: Verdict | dict[str, Any], walk: WalkCommitment | None = None,
          lanes: LaneRequest | None = None, lane_openings: Sequence[LaneOpening] = ()) -> dict[str, Any]:
    """The transcript of a judged challenge (the verdict as an object or as its stored JSON); with its
    memory phase's evidence when it has one."""
    p = challenge.params
    t = challenge.thresholds
    doc = {
        "version": VERSION,
        "spec": p.spec,
        "challenge": {
            "challenge_id": challenge.challenge_id, "seed": p.seed.hex(), "m": p.m, "n": p.n, "k": p.k,
            "rounds": p.rounds, "device_model": challenge.device_model, "profile": challenge.profile,
            "issued_at": challenge.issued_at, "spot_checks": challenge.spot_checks,
            "thresholds": {"expected_s": t.expected_s, "fast_s": t.fast_s, "slow_s": t.slow_s,
                           "deadline_s": t.deadline_s},
        },
        "commitment": {"roots": [r.hex() for r in commitment.roots], "received_at": commitment.received_at,
                       "rtt_s": commitment.rtt_s, "measured_s": commitment.measured_s},
        "request": {"pairs": [list(pair) for pair in request.pairs],
                    "x": request.x.astype("<u4").tobytes().hex()},
        "openings": [o.to_json() for o in openings],
        "verdict": verdict.to_json() if isinstance(verdict, Verdict) else dict(verdict),
    }
    if challenge.memory is not None:
        plan = challenge.memory
        doc["memory"] = {
            "plan": {"table_rounds": plan.table_rounds, "lanes": plan.lanes, "steps": plan.steps,
                     "opened": plan.opened},
            "nonce": None if request.nonce is None else request.nonce.hex(),
            "walk": None if walk is None else {"walk_root": walk.walk_root.hex(), "nonce_sent_at": walk.nonce_sent_at,
                                               "received_at": walk.received_at, "rtt_s": walk.rtt_s,
                                               "walk_s": walk.walk_s},
            "lanes": None if lanes is None else list(lanes.lanes),
            "lane_openings": [o.to_json() for o in lane_openings],
        }
    return doc


def encode(doc: dict[str, Any]) -> bytes:
    """A transcript's canonical bytes (verifier/evidence.py): what the gateway serves, and what its verdict's
    log entry hashes (``transcript_sha256``), so any client can hash the response body as it came."""
    return evidence.canonical(doc)


def _get(obj: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise TranscriptError(f"{where}: missing field {key!r}")
    value = obj[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise TranscriptError(f"{where}.{key}: expected {getattr(kind, '__name__', kind)}, got {type(value).__name__}")
    return value


def _number(obj: Any, key: str, where: str) -> float:
    value = _get(obj, key, (int, float), where)
    if not math.isfinite(value):
        raise TranscriptError(f"{where}.{key}: not a finite number")
    return float(value)


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise TranscriptError(f"{where}: expected a hex string, got {type(value).__name__}")
    return value


def _hex(text: str, where: str, length: int | None = None) -> bytes:
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise TranscriptError(f"{where}: not hex") from None
    if length is not None and len(raw) != length:
        raise TranscriptError(f"{where}: expected {length} bytes, got {len(raw)}")
    return raw


def parse(doc: Any) -> tuple[Challenge, Commitment, OpeningRequest, list[Opening], dict[str, Any]]:
    """Objects from a transcript document, every field checked; the recorded verdict as given."""
    if not isinstance(doc, dict):
        raise TranscriptError("transcript: expected a JSON object")
    if doc.get("version") != VERSION:
        raise TranscriptError(f"version: expected {VERSION!r}, got {doc.get('version')!r}")
    c = _get(doc, "challenge", dict, "transcript")
    spec = doc.get("spec", SPEC_V1)  # transcripts name their challenge's spec; v1 ones always did
    if spec not in SPECS:
        raise TranscriptError(f"spec: expected one of {', '.join(SPECS)}, got {spec!r}")
    try:
        for key, kind in (("seed", str), ("m", int), ("n", int), ("k", int), ("rounds", int)):
            _get(c, key, kind, "challenge")  # a missing or mistyped field named as the transcript's
        params = ChallengeParams.from_json({**c, "spec": spec})
        t = _get(c, "thresholds", dict, "challenge")
        challenge = Challenge(
            challenge_id=_get(c, "challenge_id", str, "challenge"), params=params,
            device_model=_get(c, "device_model", str, "challenge"), profile=_get(c, "profile", str, "challenge"),
            issued_at=_number(c, "issued_at", "challenge"),
            thresholds=Thresholds(*(_number(t, f, "challenge.thresholds")
                                    for f in ("expected_s", "fast_s", "slow_s", "deadline_s"))),
            spot_checks=_get(c, "spot_checks", int, "challenge"))
        cm = _get(doc, "commitment", dict, "transcript")
        roots = tuple(_hex(_text(h, f"commitment.roots[{i}]"), f"commitment.roots[{i}]", 32)
                      for i, h in enumerate(_get(cm, "roots", list, "commitment")))
        commitment = Commitment(challenge.challenge_id, roots, _number(cm, "received_at", "commitment"),
                                _number(cm, "rtt_s", "commitment"), _number(cm, "measured_s", "commitment"))
        rq = _get(doc, "request", dict, "transcript")
        pairs = []
        for i, pair in enumerate(_get(rq, "pairs", list, "request")):
            if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(v, int) for v in pair)):
                raise TranscriptError(f"request.pairs[{i}]: expected [round, row]")
            pairs.append((pair[0], pair[1]))
        x_raw = _hex(_get(rq, "x", str, "request"), "request.x", 4 * params.n)
        mem = doc.get("memory")
        nonce = None
        if mem is not None:
            mp = _get(mem, "plan", dict, "memory")
            plan = MemoryPlan(params, *(_get(mp, f, int, "memory.plan") for f in ("table_rounds", "lanes", "steps",
                                                                                   "opened")))
            challenge = Challenge(challenge.challenge_id, params, challenge.device_model, challenge.profile,
                                  challenge.issued_at, challenge.thresholds, challenge.spot_checks, plan)
            if mem.get("nonce") is not None:
                nonce = _hex(_text(mem["nonce"], "memory.nonce"), "memory.nonce", 16)
        request = OpeningRequest(challenge.challenge_id, tuple(pairs),
                                 np.frombuffer(x_raw, dtype="<u4").astype(np.int64), nonce)
        openings = [Opening.from_json(o) for o in _get(doc, "openings", list, "transcript")]
    except InvalidParameter as exc:
        raise TranscriptError(f"invalid field {exc.param}: {exc.detail}") from None
    verdict = _get(doc, "verdict", dict, "transcript")
    return challenge, commitment, request, openings, verdict


def parse_memory(doc: dict[str, Any], challenge: Challenge
                 ) -> tuple[WalkCommitment | None, LaneRequest | None, list[LaneOpening]]:
    """The memory phase's evidence of a transcript (parse's `challenge`): the walk, the lanes drawn and the
    opened lanes; (None, None, []) for a challenge without one."""
    mem = doc.get("memory")
    if mem is None or challenge.memory is None:
        return None, None, []
    try:
        w = mem.get("walk") if isinstance(mem, dict) else None
        walk = None
        if w is not None:
            walk = WalkCommitment(challenge.challenge_id,
                                  _hex(_text(_get(w, "walk_root", str, "memory.walk"), "memory.walk.walk_root"),
                                       "memory.walk.walk_root", 32),
                                  *(_number(w, f, "memory.walk") for f in ("nonce_sent_at", "received_at", "rtt_s",
                                                                           "walk_s")))
        drawn = mem.get("lanes")
        if drawn is not None and not (isinstance(drawn, list) and all(isinstance(v, int) and not isinstance(v, bool)
                                                                      for v in drawn)):
            raise TranscriptError("memory.lanes: expected a list of lane numbers")
        lanes = None if drawn is None else LaneRequest(challenge.challenge_id, tuple(drawn))
        opened = [LaneOpening.from_json(o) for o in _get(mem, "lane_openings", list, "memory")]
    except InvalidParameter as exc:
        raise TranscriptError(f"invalid field {exc.param}: {exc.detail}") from None
    return walk, lanes, opened


def recheck(doc: Any, verifier: Verifier | None = None) -> tuple[Verdict, list[str]]:
    """Re-run every check of a transcript: the recomputed verdict and its differences from the record.

    The timing is re-judged from the recorded measurement and the thresholds fixed at issue; the
    correctness from the roots, x and the opened rows alone. An empty list means the record stands.
    """
    challenge, commitment, request, openings, recorded = parse(doc)
    expected_measured = max(0.0, commitment.received_at - challenge.issued_at - commitment.rtt_s)
    diffs = []
    if not math.isclose(expected_measured, commitment.measured_s, rel_tol=0, abs_tol=1e-9):
        diffs.append(f"commitment.measured_s: recorded {commitment.measured_s}, "
                     f"but received_at - issued_at - rtt_s = {expected_measured}")
    walk, lanes, lane_openings = parse_memory(doc, challenge)
    if walk is not None:
        expected_walk = max(0.0, walk.received_at - walk.nonce_sent_at - walk.rtt_s)
        if not math.isclose(expected_walk, walk.walk_s, rel_tol=0, abs_tol=1e-9):
            diffs.append(f"memory.walk.walk_s: recorded {walk.walk_s}, but received_at - nonce_sent_at - rtt_s = "
                         f"{expected_walk}")
    verdict = (verifier or Verifier()).judge(challenge, commitment, request, openings, walk, lanes, lane_openings)
    fresh = verdict.to_json()
    for key in sorted(DECISIVE):
        if fresh.get(key) != recorded.get(key):
            diffs.append(f"verdict.{key}: recorded {recorded.get(key)!r}, recomputed {fresh.get(key)!r}")
    got, want = fresh.get("memory") or {}, recorded.get("memory") or {}
    for key in sorted(MEMORY_DECISIVE):
        if got.get(key) != want.get(key):
            diffs.append(f"verdict.memory.{key}: recorded {want.get(key)!r}, recomputed {got.get(key)!r}")
    return verdict, diffs


# What a verdict decides, re-judged exactly. The rest (best_match, cheat_pass_probability, cheat_model,
# reasons) explains it against the profile table of the day and the cheat model, which improve over time:
# a transcript recorded under an older table still stands when what it decided stands.
DECISIVE = frozenset({"challenge_id", "outcome", "correctness", "failure", "timing", "measured_s", "expected_s",
                      "measured_tops", "claimed_profile"})
MEMORY_DECISIVE = frozenset({"passed", "failure", "walk_class", "walk_s", "capacity", "table_bytes"})
