"""CheckpointCommitter: what a provider runs inside a renter's training loop (issue 7).

Every `interval` steps it commits the named state (verifier.checkpoints layout: names sorted, dtype,
shape, little-endian bytes in 1 KiB chunks), binding the step, the hash of the batch indices the steps
since the last commitment used, and the previous commitment's hash (a hash chain). It keeps the
checkpoints locally (a directory, newest `retention` kept; `_keep` says which files) so that the gateway
can later ask for the state at the start of a segment and for chunks at its end. Sending the commitments to the gateway
(signed, timestamped there) is done by agent.training.TrainingReporter (an `on_commit` callback).
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from gpuproof.kernels.errors import InvalidParameter
from gpuproof.verifier import checkpoints
from gpuproof.verifier.checkpoints import ZERO, CheckpointCommitment, batch_hash

__all__ = ["ZERO", "CheckpointCommitment", "CheckpointCommitter", "batch_hash"]


class CheckpointCommitter:
    """Commits every `interval` steps; `record(step, indices, state)` is called after each step.

    The root is computed in the caller (it chains the next commitment); keeping the checkpoint on disk
    and `on_commit` (sending it) run in order on one background thread when `background` is true, so the
    training loop does not wait for the disk or the network. `flush()` waits for them and raises what
    they raised; `close()` flushes and stops the thread.
    """

    def __init__(self, interval: int, store: Path | None = None, retention: int = 64, gpu: bool = False,
                 on_commit: Callable[[CheckpointCommitment], object] | None = None, background: bool = False) -> None:
        if interval < 1:
            raise InvalidParameter("interval", f"must be at least 1, got {interval}")
        if retention < 2:
            raise InvalidParameter("retention", f"must keep at least 2 checkpoints (a segment), got {retention}")
        self.interval, self.store, self.retention, self.gpu = interval, store, retention, gpu
        self.on_commit = on_commit
        self.commitments: list[CheckpointCommitment] = []
        self._kept_steps: list[int] = []
        self._pending: list[np.ndarray] = []
        if store is not None:
            store.mkdir(parents=True, exist_ok=True)
        self._queue: queue.Queue | None = None
        self._error: BaseException | None = None
        if background:
            self._queue = queue.Queue()
            self._thread = threading.Thread(target=self._drain, name="gpuproof-checkpoints", daemon=True)
            self._thread.start()

    def _drain(self) -> None:
        assert self._queue is not None
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                if self._error is None:  # after a failure nothing more is kept or sent: flush() raises it
                    self._publish(*item)
            except BaseException as exc:  # noqa: BLE001 - handed to the training loop by flush()
                self._error = exc
            finally:
                self._queue.task_done()

    def flush(self) -> None:
        """Wait until every checkpoint is kept and sent; raise the first error the thread met."""
        if self._queue is not None:
            self._queue.join()
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        if self._queue is not None:
            self._queue.put(None)
            self._thread.join()
            self._queue = None
        self.flush()

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
        if self._error is not None:
            raise self._error
        data = None
        if self.gpu:
            root, entries = checkpoints.root_on_gpu(state)
        elif self.store is not None:  # one snapshot of the bytes: hashed now, written later, never re-read
            entries = checkpoints.manifest(state)
            data = checkpoints.state_bytes(state, entries)
            root = checkpoints.root_of_buffer(data, entries)
        else:
            root, entries = checkpoints.root_cpu(state)
        bh = batch_hash(self._pending)
        prev = self.commitments[-1].hash if self.commitments else ZERO
        c = CheckpointCommitment(step, root, bh, prev, checkpoints.chain_hash(step, root, bh, prev), tuple(entries))
        self.commitments.append(c)
        batches, self._pending = self._pending, []
        if self.store is not None and data is None:
            data = checkpoints.state_bytes(state, entries)
        if self._queue is not None:
            self._queue.put((c, data, batches))
        else:
            self._publish(c, data, batches)
        return c

    def _publish(self, c: CheckpointCommitment, data: bytes | None, batches: list[np.ndarray]) -> None:
        if self.store is not None:  # kept before the gateway hears of it: every audit can be answered
            assert data is not None
            self._keep(c, data, batches)
        if self.on_commit is not None:
            self.on_commit(c)

    def _keep(self, c: CheckpointCommitment, data: bytes, batches: list[np.ndarray]) -> None:
        """One file per checkpoint, `step-<step>.ckpt`: u64le header length, the header (JSON: the
        commitment and the batches' lengths), the batches (int64), then the state in the upload format
        (verifier.checkpoints.state_bytes: raw little-endian tensors in manifest order). One plain write,
        no archive: keeping a checkpoint costs little per step."""
        assert self.store is not None
        arrays = [np.asarray(b, dtype="<i8").ravel() for b in batches]
        header = json.dumps({"commitment": c.to_json(), "batches": [len(a) for a in arrays]}).encode()
        with open(self.store / f"step-{c.step:09d}.ckpt", "wb") as fh:
            fh.write(len(header).to_bytes(8, "little") + header)
            for a in arrays:
                fh.write(a.tobytes())
            fh.write(data)
        self._kept_steps.append(c.step)
        while len(self._kept_steps) > self.retention:
            (self.store / f"step-{self._kept_steps.pop(0):09d}.ckpt").unlink(missing_ok=True)

    def _read(self, step: int) -> tuple[dict[str, Any], list[np.ndarray], bytes]:
        """A kept checkpoint: its header, its batches and its state bytes."""
        if self.store is None:
            raise InvalidParameter("store", "this committer keeps no checkpoints")
        path = self.store / f"step-{step:09d}.ckpt"
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise InvalidParameter("step", f"no kept checkpoint for step {step} (retention {self.retention})") from None
        size = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8:8 + size])
        at, batches = 8 + size, []
        for n in header["batches"]:
            batches.append(np.frombuffer(raw, dtype="<i8", count=n, offset=at).copy())
            at += 8 * n
        return header, batches, raw[at:]

    def commitment(self, step: int) -> CheckpointCommitment:
        for c in self.commitments:
            if c.step == step:
                return c
        return CheckpointCommitment.from_json(self._read(step)[0]["commitment"])  # kept by an earlier run

    def batches(self, step: int) -> list[np.ndarray]:
        """The batch indices of the steps that led to the commitment at `step`."""
        return self._read(step)[1]

    def state_bytes(self, step: int) -> bytes:
        """A kept checkpoint in the upload format."""
        return self._read(step)[2]

    def load(self, step: int) -> dict[str, np.ndarray]:
        """A kept checkpoint as NumPy arrays (to open chunks of it, or to resume training)."""
        return checkpoints.state_from_buffer(self.state_bytes(step), list(self.commitment(step).manifest))
