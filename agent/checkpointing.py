"""CheckpointCommitter: what a provider runs inside a renter's training loop (issue 7).

Every `interval` steps it commits the named state (verifier.checkpoints layout: names sorted, dtype,
shape, little-endian bytes in 1 KiB chunks), binding the step, the hash of the batch indices the steps
since the last commitment used, and the previous commitment's hash (a hash chain). It keeps the
checkpoints locally (a directory, newest `retention` kept) so that the gateway can later ask for the
state at the start of a segment and for chunks at its end. Sending the commitments to the gateway
(signed, timestamped there) is done by agent.training.TrainingReporter (an `on_commit` callback).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kernels.errors import InvalidParameter
from verifier import checkpoints

ZERO = bytes(32)


@dataclass(frozen=True)
class CheckpointCommitment:
    step: int
    root: bytes
    batch_hash: bytes
    prev_hash: bytes
    hash: bytes
    manifest: tuple[checkpoints.TensorEntry, ...]

    def to_json(self) -> dict[str, Any]:
        return {"step": self.step, "root": self.root.hex(), "batch_hash": self.batch_hash.hex(),
                "prev_hash": self.prev_hash.hex(), "hash": self.hash.hex(),
                "manifest": checkpoints.manifest_json(self.manifest)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CheckpointCommitment:
        """A commitment received over the network, fields and manifest validated (InvalidParameter)."""
        try:
            fields = {k: bytes.fromhex(data[k]) for k in ("root", "batch_hash", "prev_hash", "hash")}
            step = int(data["step"])
            manifest = tuple(checkpoints.manifest_from_json(data["manifest"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidParameter("commitment", f"malformed: {exc}") from None
        return cls(step=step, manifest=manifest, **fields)


def batch_hash(batches: list[np.ndarray]) -> bytes:
    """SHA-256 over the steps' batch indices, in order, as little-endian int64."""
    h = hashlib.sha256(b"gpuproof.batches.v1")
    for b in batches:
        arr = np.ascontiguousarray(np.asarray(b, dtype="<i8"))
        h.update(len(arr).to_bytes(8, "little"))
        h.update(arr.tobytes())
    return h.digest()


class CheckpointCommitter:
    """Commits every `interval` steps; `record(step, indices, state)` is called after each step."""

    def __init__(self, interval: int, store: Path | None = None, retention: int = 64, gpu: bool = False,
                 on_commit: Callable[[CheckpointCommitment], None] | None = None) -> None:
        if interval < 1:
            raise InvalidParameter("interval", f"must be at least 1, got {interval}")
        if retention < 2:
            raise InvalidParameter("retention", f"must keep at least 2 checkpoints (a segment), got {retention}")
        self.interval, self.store, self.retention, self.gpu = interval, store, retention, gpu
        self.on_commit = on_commit
        self.commitments: list[CheckpointCommitment] = []
        self._pending: list[np.ndarray] = []
        if store is not None:
            store.mkdir(parents=True, exist_ok=True)

    def start(self, state: dict[str, Any]) -> CheckpointCommitment:
        """Commit the initial state (step 0, no batches)."""
        return self._commit(0, state)

    def record(self, step: int, indices: np.ndarray, state: dict[str, Any]) -> CheckpointCommitment | None:
        """After step `step` (1-based) used `indices`: commit when the interval is reached."""
        self._pending.append(np.asarray(indices))
        if step % self.interval:
            return None
        return self._commit(step, state)

    def _commit(self, step: int, state: dict[str, Any]) -> CheckpointCommitment:
        root, entries = checkpoints.root_on_gpu(state) if self.gpu else checkpoints.root_cpu(state)
        bh = batch_hash(self._pending)
        prev = self.commitments[-1].hash if self.commitments else ZERO
        c = CheckpointCommitment(step, root, bh, prev, checkpoints.chain_hash(step, root, bh, prev), tuple(entries))
        self.commitments.append(c)
        batches, self._pending = self._pending, []
        if self.store is not None:  # kept before the gateway hears of it: every audit can be answered
            host: dict[str, Any] = {k: (v.get() if type(v).__module__.startswith("cupy") else np.asarray(v))
                                    for k, v in state.items()}
            np.savez(self.store / f"step-{step:09d}.npz", **host)  # type: ignore[arg-type]
            np.savez(self.store / f"batches-{step:09d}.npz", *[np.asarray(b, dtype=np.int64) for b in batches])
            for pattern in ("step-*.npz", "batches-*.npz"):
                for old in sorted(self.store.glob(pattern))[:-self.retention]:
                    old.unlink()
        if self.on_commit is not None:
            self.on_commit(c)
        return c

    def commitment(self, step: int) -> CheckpointCommitment:
        for c in self.commitments:
            if c.step == step:
                return c
        raise InvalidParameter("step", f"no commitment at step {step}")

    def batches(self, step: int) -> list[np.ndarray]:
        """The batch indices of the steps that led to the commitment at `step`."""
        path = self._kept(f"batches-{step:09d}.npz", step)
        with np.load(path) as data:
            return [data[f"arr_{i}"] for i in range(len(data.files))]

    def _kept(self, name: str, step: int) -> Path:
        if self.store is None:
            raise InvalidParameter("store", "this committer keeps no checkpoints")
        path = self.store / name
        if not path.exists():
            raise InvalidParameter("step", f"no kept checkpoint for step {step} (retention {self.retention})")
        return path

    def load(self, step: int) -> dict[str, np.ndarray]:
        """A kept checkpoint, for the gateway's upload request."""
        with np.load(self._kept(f"step-{step:09d}.npz", step)) as data:
            return {k: data[k] for k in data.files}
