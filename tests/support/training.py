"""A provider's training run committed and closed through a gateway client, its audits left unanswered."""

from __future__ import annotations

from gpuproof.agent.checkpointing import CheckpointCommitter
from gpuproof.agent.training import TrainingReporter
from gpuproof.client import GatewayClient
from gpuproof.verifier.workload import MLPJob


def commit_and_close(provider: GatewayClient, job_id: str, steps: int = 8, interval: int = 4) -> dict:
    """Train the reference MLP (seed 7, hidden 32) for `steps`, commit every `interval` steps, close the
    run and return the gateway's answer to the close (the drawn audits)."""
    reporter = TrainingReporter(provider, job_id)
    committer = CheckpointCommitter(interval, on_commit=reporter.send)
    job = MLPJob(seed=7, hidden=32)
    state = job.init_state()
    committer.start(state)
    for step in range(1, steps + 1):
        state = job.step(state, job.batch_indices(step))
        committer.record(step, job.batch_indices(step), state)
    return reporter.close()
