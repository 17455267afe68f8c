"""The provider's side of training proofs over HTTP, and the reference job run as a provider would.

`TrainingReporter` sends each CheckpointCommitter commitment to the gateway as it is made (signed; the
gateway timestamps it), closes the run, and answers the drawn audits from the kept checkpoints: the
state at each segment's start (raw bytes, checked against its root on arrival) and the requested chunks
of its end with their audit paths, plus the segment's batch indices. Network errors, 5xx and 429 are
retried with the same content, which the gateway answers idempotently.

`run_reference_job` trains verifier.workload.MLPJob under a job's checkpoint policy, as a `TrainingRun`
says: honestly here; the dishonest runs of docs/threat-model.md are subclasses in gpuproof.simulators.training
(the demo and the tests hand them in; the agent never imports them).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from gpuproof.agent.checkpointing import CheckpointCommitment, CheckpointCommitter
from gpuproof.agent.daemon import with_retries
from gpuproof.client import GatewayClient
from gpuproof.kernels.errors import InvalidParameter
from gpuproof.verifier import checkpoints
from gpuproof.verifier.workload import MLPJob


class TrainingReporter:
    def __init__(self, client: GatewayClient, job_id: str, retry_limit_s: float = 120.0) -> None:
        self.client, self.job_id, self.retry_limit_s = client, job_id, retry_limit_s

    def _retrying(self, fn: Callable[[], Any]) -> Any:
        return with_retries(self.client, fn, limit_s=self.retry_limit_s, wait_multiplier=0.2, wait_max_s=5)

    def send(self, commitment: CheckpointCommitment) -> dict:
        body = commitment.to_json()
        return self._retrying(lambda: self.client.post_checkpoint(self.job_id, body))

    def close(self) -> dict:
        return self._retrying(lambda: self.client.close_run(self.job_id))

    def report(self) -> dict:
        """The gateway's training report of the job, read through the same retries as every other call."""
        return self._retrying(lambda: self.client.training(self.job_id))

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


class TrainingRun:
    """How `run_reference_job` trains and reports: honestly. Each hook is one decision a dishonest provider
    could make differently (gpuproof.simulators.training overrides them); the defaults are the protocol's."""

    def job(self, job: MLPJob) -> MLPJob:
        """The job actually trained (an honest provider trains the one the policy names)."""
        return job

    def begin(self, job: MLPJob, state: dict[str, np.ndarray], data: Any, steps: int) -> None:
        """Called once before the first step, with the initial state."""

    def step(self, job: MLPJob, step: int, state: dict[str, np.ndarray], batch: np.ndarray,
             data: Any) -> dict[str, np.ndarray]:
        """The state after `step` (1-based) on `batch`, which is committed whatever this returns."""
        return job.step(state, batch, data)

    def hold(self, commitment: CheckpointCommitment) -> bool:
        """True to keep a commitment back until the end of the run instead of sending it as it is made."""
        return False

    def tamper(self, opening: dict) -> dict:
        """An audit's chunk opening as sent (an honest provider sends what it committed)."""
        return opening


def run_reference_job(client: GatewayClient, job_id: str, policy: dict, store: Path, steps: int,
                      step_delay_s: float = 0.0, run: TrainingRun | None = None,
                      on_event: Callable[[str, dict], None] = lambda kind, data: None) -> dict:
    """Train the reference MLP (policy["workload"]["params"]) for `steps` steps, committing every
    policy["interval"] steps, close the run and answer its audits. Returns the gateway's training report.
    `step_delay_s` stands in for a real accelerator's step time (the demo's stand-in job is tiny); `run`
    decides each step (default: honestly)."""
    run = run or TrainingRun()
    interval = int(policy.get("interval", 10))
    if steps < interval or steps % interval:
        raise InvalidParameter("steps", f"must be a positive multiple of the interval {interval}, got {steps}")
    job = MLPJob(**(policy.get("workload") or {}).get("params", {}))
    reporter = TrainingReporter(client, job_id)
    held: list[CheckpointCommitment] = []

    def on_commit(c: CheckpointCommitment) -> None:
        if run.hold(c):
            held.append(c)
            return
        reporter.send(c)
        on_event("commitment", {"job_id": job_id, "step": c.step})

    committer = CheckpointCommitter(interval, store=store, retention=steps // interval + 1, on_commit=on_commit,
                                    background=True)
    job = run.job(job)
    data = job.data()
    state = job.init_state()
    committer.start(state)
    run.begin(job, state, data, steps)
    for step in range(1, steps + 1):
        idx = job.batch_indices(step)
        state = run.step(job, step, state, idx, data)
        if step_delay_s:
            time.sleep(step_delay_s)
        committer.record(step, idx, state)
    committer.close()  # every checkpoint kept and sent (raises what the background thread met)
    for c in held:
        reporter.send(c)
    report = reporter.close()
    on_event("closed", {"job_id": job_id, "flags": report["flags"], "audits": len(report["audits"])})
    reporter.answer(committer, report["audits"], tamper=run.tamper)
    return reporter.report()


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
