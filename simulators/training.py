"""Dishonest training providers (docs/threat-model.md, "Training proofs"): each is a `TrainingRun` that
`gpuproof.agent.training.run_reference_job` follows instead of the honest one. The demo (hidden
`gpuproof cheat train --cheat NAME`), tests/gateway/test_training.py and bench/training_attacks.py run them
to show each is caught; the provider's agent never imports this module.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from gpuproof.agent.checkpointing import CheckpointCommitment
from gpuproof.agent.training import TrainingRun
from gpuproof.kernels.errors import InvalidParameter
from gpuproof.verifier.workload import MLPJob

CHEATS = {
    "skip-steps": "trains every other step only, commits what it has (replay differs)",
    "interpolate": "trains to the end, commits straight-line interpolations in between",
    "fewer-batches": "trains on half of each committed batch",
    "at-end": "trains, but sends every commitment in one burst at the end",
    "bad-openings": "opens chunks that are not the committed ones",
    "other-job": "commits another job's checkpoints (same model, other data)",
}


class _Partial(TrainingRun):
    """Cheats only in the given segments (0-based, `interval` steps each; None: in every one)."""

    def __init__(self, interval: int = 1, segments: set[int] | None = None) -> None:
        self.interval, self.segments = interval, segments

    def cheating_at(self, step: int) -> bool:
        return self.segments is None or (step - 1) // self.interval in self.segments


class SkipSteps(_Partial):
    def step(self, job: MLPJob, step: int, state: dict[str, np.ndarray], batch: np.ndarray,
             data: Any) -> dict[str, np.ndarray]:
        if self.cheating_at(step) and step % 2:
            return state  # the step is skipped, the batch is still committed
        return job.step(state, batch, data)


class FewerBatches(_Partial):
    def step(self, job: MLPJob, step: int, state: dict[str, np.ndarray], batch: np.ndarray,
             data: Any) -> dict[str, np.ndarray]:
        return job.step(state, batch[: max(1, len(batch) // 2)] if self.cheating_at(step) else batch, data)


class Interpolate(TrainingRun):
    def begin(self, job: MLPJob, state: dict[str, np.ndarray], data: Any, steps: int) -> None:
        self.start, self.steps = state, steps
        final = state
        for step in range(1, steps + 1):
            final = job.step(final, job.batch_indices(step), data)
        self.final = final

    def step(self, job: MLPJob, step: int, state: dict[str, np.ndarray], batch: np.ndarray,
             data: Any) -> dict[str, np.ndarray]:
        w = step / self.steps
        return {k: ((1 - w) * self.start[k] + w * self.final[k]).astype(np.float32) for k in self.final}


class AtEnd(TrainingRun):
    def hold(self, commitment: CheckpointCommitment) -> bool:
        return True  # everything at once, after the last step


class BadOpenings(TrainingRun):
    def tamper(self, opening: dict) -> dict:
        chunk = bytearray(bytes.fromhex(opening["chunk"]))
        chunk[0] ^= 1
        return opening | {"chunk": chunk.hex()}


class OtherJob(TrainingRun):
    def job(self, job: MLPJob) -> MLPJob:
        """Someone else's run (same model, other data), committed as this job's."""
        return dataclasses.replace(job, seed=job.seed + 1000)


def cheating_run(name: str, interval: int = 1, segments: set[int] | None = None) -> TrainingRun:
    """The dishonest run `name` (a key of CHEATS); skip-steps and fewer-batches cheat only in `segments`
    (0-based, of `interval` steps; None: all)."""
    if name not in CHEATS:
        raise InvalidParameter("cheat", f"expected one of {sorted(CHEATS)}, got {name!r}")
    if name == "skip-steps":
        return SkipSteps(interval, segments)
    if name == "fewer-batches":
        return FewerBatches(interval, segments)
    return {"interpolate": Interpolate, "at-end": AtEnd, "bad-openings": BadOpenings, "other-job": OtherJob}[name]()
