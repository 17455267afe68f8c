"""Replaying a committed training segment (the validator's side of training proofs; `replay_audit` runs
one audit's materials as the gateway serves them, `gpuproof replay --job ID` drives it).

Given the commitments at steps t and t+k, the state uploaded for t, the batches committed for the
segment and chunks opened at t+k: the upload must match the root at t, the batches must hash to what
t+k committed, the opened chunks must be in the root at t+k, and replaying the renter's step function
from t for k steps must reproduce t+k:
- `exact`: the replayed state's root equals the committed root (deterministic step functions);
- `tolerance`: each opened chunk is within a relative L2 distance `tau` of the replayed chunk. `tau` is
  calibrated per job by replaying one segment twice with different BLAS thread counts (a different
  summation order, the nondeterminism an honest provider's hardware adds): tau = max(10 * d, 1e-4),
  with d the largest relative distance seen between the two replays.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from gpuproof.kernels.errors import InvalidParameter, ProofError
from gpuproof.verifier import checkpoints

StepFn = Callable[[dict[str, np.ndarray], np.ndarray], dict[str, np.ndarray]]


Opened = checkpoints.Opened


@dataclass(frozen=True)
class SegmentVerdict:
    outcome: str  # "pass" / "fail"
    mode: str
    start: int
    end: int
    reason: str
    tensor: str | None = None
    chunk: int | None = None
    distance: float | None = None


def _rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    denom = max(float(np.linalg.norm(b64)), 1e-30)
    return float(np.linalg.norm(a64 - b64)) / denom


def replay(step: StepFn, state: dict[str, np.ndarray], batches: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    for indices in batches:
        state = step(state, np.asarray(indices))
    return state


def calibrate_tau(step_factory: Callable[[int], StepFn], state: dict[str, np.ndarray],
                  batches: Sequence[np.ndarray]) -> float:
    """tau from two replays of one segment with 1 and 2 BLAS threads: max(10 * largest distance, 1e-4)."""
    a = replay(step_factory(1), state, batches)
    b = replay(step_factory(2), state, batches)
    d = max((_rel_l2(a[k], b[k]) for k in a), default=0.0)
    return max(10 * d, 1e-4)


def check_segment(step: StepFn, start: Any, end: Any, uploaded: dict[str, np.ndarray],
                  batches: Sequence[np.ndarray], opened: Sequence[Opened], mode: str = "exact",
                  tau: float | None = None) -> SegmentVerdict:
    """The verdict on the segment from commitment `start` to commitment `end` (CheckpointCommitments)."""
    if mode not in ("exact", "tolerance"):
        raise InvalidParameter("mode", f"expected exact or tolerance, got {mode!r}")
    if mode == "tolerance" and (tau is None or not tau > 0):
        raise InvalidParameter("tau", "tolerance mode needs a positive tau (calibrate_tau)")

    def fail(reason: str, **kw: Any) -> SegmentVerdict:
        return SegmentVerdict("fail", mode, start.step, end.step, reason, **kw)

    if end.step - start.step != len(batches):
        return fail(f"segment {start.step}->{end.step} needs {end.step - start.step} batches, got {len(batches)}")
    if checkpoints.chain_hash(end.step, end.root, end.batch_hash, end.prev_hash) != end.hash:
        return fail("the end commitment's hash does not match its fields")
    root, _ = checkpoints.root_cpu(uploaded)
    if not hmac.compare_digest(root, start.root):
        return fail(f"the uploaded state at step {start.step} does not match its committed root")
    if not hmac.compare_digest(checkpoints.batch_hash(list(batches)), end.batch_hash):
        return fail("the batches are not the ones committed for this segment")
    manifest = list(end.manifest)
    for o in opened:
        try:
            checkpoints.verify_chunk(end.root, manifest, o.name, o.index, o.chunk, o.path)
        except (ProofError, InvalidParameter) as exc:
            return fail(f"opened chunk {o.index} of {o.name!r} is not in the committed root: {exc}", tensor=o.name,
                        chunk=o.index)
    replayed = replay(step, uploaded, batches)
    by_name = {e.name: e for e in manifest}
    if mode == "exact":
        if hmac.compare_digest(checkpoints.root_cpu(replayed)[0], end.root):
            return SegmentVerdict("pass", mode, start.step, end.step, "the replay reproduces the committed root")
        for o in opened:  # name the first opened chunk that differs, when one does
            replayed_chunk = checkpoints.open_chunk(replayed, manifest, o.name, o.index)[0]
            if replayed_chunk != o.chunk:
                return fail(f"replayed {o.name!r} chunk {o.index} differs from the committed one", tensor=o.name,
                            chunk=o.index)
        return fail("the replayed state's root differs from the committed root")
    assert tau is not None  # checked above
    worst = 0.0
    for o in opened:
        dtype = np.dtype(by_name[o.name].dtype)
        mine = np.frombuffer(checkpoints.open_chunk(replayed, manifest, o.name, o.index)[0], dtype=dtype)
        theirs = np.frombuffer(o.chunk, dtype=dtype)
        d = _rel_l2(theirs, mine)
        worst = max(worst, d)
        if not d <= tau:
            return fail(f"{o.name!r} chunk {o.index} is {d:.3g} from the replay (tau {tau:.3g})", tensor=o.name,
                        chunk=o.index, distance=d)
    return SegmentVerdict("pass", mode, start.step, end.step, f"{len(opened)} opened chunks within tau {tau:.3g} "
                          f"(worst {worst:.3g})", distance=worst)


def step_with_threads(job: Any, threads: int) -> StepFn:
    """job.step with BLAS limited to `threads` threads (for calibration)."""
    data = job.data()

    def run(state: dict[str, np.ndarray], indices: np.ndarray) -> dict[str, np.ndarray]:
        return job.step(state, indices, data, threads=threads)

    return run


def replay_audit(materials: dict[str, Any], data: bytes, step_factory: Callable[[int], StepFn]) -> dict[str, Any]:
    """The verdict on one audit from the gateway's materials and uploaded state, checked here from scratch
    (the validator trusts none of the gateway's own checks). `step_factory(threads)` gives the job's step
    function; in tolerance mode without a tau in the policy, tau is calibrated on this segment."""
    import hashlib

    policy = materials.get("policy") or {}
    mode = policy.get("mode", "exact")
    if hashlib.sha256(data).hexdigest() != materials["upload_sha256"]:
        return {"outcome": "fail", "mode": mode, "reason": "the state served is not the upload the audit names",
                "tensor": None, "chunk": None, "distance": None, "tau": None}
    start = checkpoints.CheckpointCommitment.from_json(materials["start"])
    end = checkpoints.CheckpointCommitment.from_json(materials["end"])
    state = checkpoints.state_from_buffer(data, list(start.manifest))
    batches = [np.asarray(b, dtype=np.int64) for b in materials["batches"]]
    opened = [Opened(o["name"], int(o["index"]), bytes.fromhex(o["chunk"]), tuple(bytes.fromhex(h) for h in o["path"]))
              for o in materials["openings"]]
    tau = policy.get("tau")
    if mode == "tolerance" and tau is None:
        tau = calibrate_tau(step_factory, state, batches)
    v = check_segment(step_factory(1), start, end, state, batches, opened, mode, tau)
    return {"outcome": v.outcome, "mode": v.mode, "reason": v.reason, "tensor": v.tensor, "chunk": v.chunk,
            "distance": v.distance, "tau": tau if mode == "tolerance" else None}
