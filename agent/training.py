"""The provider's side of training proofs over HTTP, and the reference job run as a provider would.

`TrainingReporter` sends each CheckpointCommitter commitment to the gateway as it is made (signed; the
gateway timestamps it), closes the run, and answers the drawn audits from the kept checkpoints: the
state at each segment's start (raw bytes, checked against its root on arrival) and the requested chunks
of its end with their audit paths, plus the segment's batch indices. Network errors, 5xx and 429 are
retried with the same content, which the gateway answers idempotently.

`run_reference_job` trains verifier.workload.MLPJob under a job's checkpoint policy; `cheat` selects one
of the dishonest providers of docs/threat-model.md (used by the demo and the tests, never by default).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from gpuproof.agent.checkpointing import CheckpointCommitment, CheckpointCommitter
from gpuproof.agent.daemon import retryable
from gpuproof.client import GatewayClient
from gpuproof.kernels.errors import InvalidParameter
from gpuproof.verifier import checkpoints
from gpuproof.verifier.workload import MLPJob
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_random_exponential

CHEATS = {
    "skip-steps": "trains every other step only, commits what it has (replay differs)",
    "interpolate": "trains to the end, commits straight-line interpolations in between",
    "fewer-batches": "trains on half of each committed batch",
    "at-end": "trains, but sends every commitment in one burst at the end",
    "bad-openings": "opens chunks that are not the committed ones",
    "other-job": "commits another job's checkpoints (same model, other data)",
}


class TrainingReporter:
    def __init__(self, client: GatewayClient, job_id: str, retry_limit_s: float = 120.0) -> None:
        self.client, self.job_id, self.retry_limit_s = client, job_id, retry_limit_s

    def _retrying(self, fn: Callable[[], Any]) -> Any:
        for attempt in Retrying(retry=retry_if_exception(retryable), reraise=True,
                                wait=wait_random_exponential(multiplier=0.2, max=5),
                                stop=stop_after_delay(self.retry_limit_s)):
            with attempt:
                return fn()
        return None  # pragma: no cover - tenacity reraises

    def send(self, commitment: CheckpointCommitment) -> dict:
        body = commitment.to_json()
        return self._retrying(lambda: self.client.post_checkpoint(self.job_id, body))

    def close(self) -> dict:
        return self._retrying(lambda: self.client.close_run(self.job_id))

    def answer(self, committer: CheckpointCommitter, audits: list[dict],
               tamper: Callable[[dict], dict] | None = None) -> list[dict]:
        """Upload and open every requested audit; returns the audits' states as the gateway reports them."""
        out = []
        for audit in audits:
            if audit["state"] != "requested":
                out.append(audit)
                continue
            aid, start, end = audit["audit_id"], audit["start_step"], audit["end_step"]
            data = committer.state_bytes(start)
            if not audit["uploaded"]:
                self._retrying(functools.partial(self.client.upload_state, aid, data))
            end_state = committer.load(end)
            wanted = [(str(n), int(i)) for n, i in audit["chunks"]]
            openings = [{"name": n, "index": i, "chunk": c.hex(), "path": [h.hex() for h in p]}
                        for n, i, c, p in checkpoints.open_chunks(end_state, list(committer.commitment(end).manifest),
                                                                  wanted)]
            if tamper is not None:
                openings = [tamper(o) for o in openings]
            batches = [b.astype(np.int64).tolist() for b in committer.batches(end)]
            out.append(self._retrying(functools.partial(self.client.open_segment, aid, batches, openings)))
        return out


def _flip(opening: dict) -> dict:
    chunk = bytearray(bytes.fromhex(opening["chunk"]))
    chunk[0] ^= 1
    return opening | {"chunk": chunk.hex()}


def run_reference_job(client: GatewayClient, job_id: str, policy: dict, store: Path, steps: int,
                      step_delay_s: float = 0.0, cheat: str | None = None,
                      on_event: Callable[[str, dict], None] = lambda kind, data: None,
                      cheat_segments: set[int] | None = None) -> dict:
    """Train the reference MLP (policy["workload"]["params"]) for `steps` steps, committing every
    policy["interval"] steps, close the run and answer its audits. Returns the gateway's training report.
    `step_delay_s` stands in for a real accelerator's step time (the demo's stand-in job is tiny).
    `cheat_segments` limits skip-steps and fewer-batches to those segments (0-based; None: all)."""
    if cheat is not None and cheat not in CHEATS:
        raise InvalidParameter("cheat", f"expected one of {sorted(CHEATS)}, got {cheat!r}")
    interval = int(policy.get("interval", 10))
    if steps < interval or steps % interval:
        raise InvalidParameter("steps", f"must be a positive multiple of the interval {interval}, got {steps}")
    job = MLPJob(**(policy.get("workload") or {}).get("params", {}))
    data = job.data()
    reporter = TrainingReporter(client, job_id)
    held: list[CheckpointCommitment] = []

    def on_commit(c: CheckpointCommitment) -> None:
        if cheat == "at-end":
            held.append(c)
            return
        reporter.send(c)
        on_event("commitment", {"job_id": job_id, "step": c.step})

    committer = CheckpointCommitter(interval, store=store, retention=steps // interval + 1, on_commit=on_commit,
                                    background=True)
    if cheat == "other-job":  # someone else's run, committed as this job's
        job = MLPJob(**{**(policy.get("workload") or {}).get("params", {}), "seed": job.seed + 1000})
        data = job.data()
    state = job.init_state()
    committer.start(state)
    final = None
    if cheat == "interpolate":
        final = state
        for step in range(1, steps + 1):
            final = job.step(final, job.batch_indices(step), data)
    start_state = state
    for step in range(1, steps + 1):
        idx = job.batch_indices(step)
        cheating_here = cheat_segments is None or (step - 1) // interval in cheat_segments
        if cheat == "interpolate":
            assert final is not None
            w = step / steps
            state = {k: ((1 - w) * start_state[k] + w * final[k]).astype(np.float32) for k in final}
        elif cheat == "skip-steps" and cheating_here and step % 2:
            pass  # the step is skipped, the batch is still committed
        elif cheat == "fewer-batches" and cheating_here:
            state = job.step(state, idx[: max(1, len(idx) // 2)], data)
        else:
            state = job.step(state, idx, data)
        if step_delay_s:
            time.sleep(step_delay_s)
        committer.record(step, idx, state)
    committer.close()  # every checkpoint kept and sent (raises what the background thread met)
    for c in held:  # the at-end cheat: everything at once
        reporter.send(c)
    report = reporter.close()
    on_event("closed", {"job_id": job_id, "flags": report["flags"], "audits": len(report["audits"])})
    reporter.answer(committer, report["audits"], tamper=_flip if cheat == "bad-openings" else None)
    return client.training(job_id)


def replay_job(client: GatewayClient, job_id: str, validator_key,  # noqa: ANN001
               on_result: Callable[[dict, dict], None] = lambda audit, result: None) -> list[dict]:
    """The validator's side (`gpuproof replay --job ID`): replay every audit of the job that is ready,
    sign each result with `validator_key` and post it. Returns the audits as the gateway then reports them."""
    from gpuproof.verifier import signatures, training
    from gpuproof.verifier.replay import replay_audit, step_with_threads
    from gpuproof.verifier.workload import workload_from_policy

    report = client.training(job_id)
    out = []
    for audit in report["audits"]:
        if audit["state"] != "ready":
            out.append(audit)
            continue
        materials = client.replay_materials(audit["audit_id"], validator_key)  # signed: a validator the job names
        data = client.replay_state(audit["audit_id"], validator_key)
        job = workload_from_policy((materials["policy"] or {}).get("workload") or {})
        result = replay_audit(materials, data, functools.partial(step_with_threads, job))
        start, end = materials["start"], materials["end"]
        fields = training.replay_fields(audit["audit_id"], job_id, audit["start_step"], audit["end_step"],
                                        start["root"], end["root"], end["hash"], materials["upload_sha256"], result)
        public = signatures.public_key_bytes(validator_key)
        signed = result | {"validator_key": public.hex(),
                           "signature": signatures.sign(validator_key, signatures.replay_message(fields)).hex()}
        on_result(audit, result)
        out.append(client.post_replay_result(audit["audit_id"], signed))
    return out
