#!/usr/bin/env python3
"""Commitment overhead of training proofs on the reference job, as a fraction of its step time.

    python bench/training_overhead.py [--steps 1000] [--repeats 7]

The reference job (verifier.workload.MLPJob, defaults) runs --steps steps at its default checkpoint
interval (MLPJob.checkpoint_interval: 50 steps, about 20 commitments/s, the gateway's per-provider rate
limit). Baseline in the same process: the same steps with no committer. Variants: the root only; the
root + the checkpoint kept on disk (background thread); the root + kept + each commitment sent, signed,
to a gateway in another process on loopback (uvicorn, SQLite; background thread). Runs are interleaved
and the median of --repeats is reported. The overhead is the time the training loop spends in the
committer over the time it spends in the steps (timed around each call: precise); the wall-clock ratio to
the baseline is printed too (noisy on a shared machine: +-10% run to run here). Target (issue 7): < 5%.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpuproof.agent.checkpointing import CheckpointCommitter  # noqa: E402
from gpuproof.verifier.workload import MLPJob  # noqa: E402


def train(job: MLPJob, steps: int, committer: CheckpointCommitter | None) -> tuple[float, float, float]:
    """(wall seconds, seconds in the steps, seconds the loop spent in the committer)."""
    data = job.data()
    batches = [job.batch_indices(s) for s in range(1, steps + 1)]
    state = job.init_state()
    in_steps = in_commit = 0.0
    t0 = time.perf_counter()
    if committer is not None:
        committer.start(state)
    for step in range(1, steps + 1):
        t1 = time.perf_counter()
        state = job.step(state, batches[step - 1], data)
        t2 = time.perf_counter()
        if committer is not None:
            committer.record(step, batches[step - 1], state)
        in_steps += t2 - t1
        in_commit += time.perf_counter() - t2
    if committer is not None:
        committer.close()
    return time.perf_counter() - t0, in_steps, in_commit


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    job = MLPJob()
    interval = job.checkpoint_interval
    from gpuproof.agent.training import TrainingReporter
    from gpuproof.client import GatewayClient
    from gpuproof.gateway import admin
    from gpuproof.gateway.db import Database
    from gpuproof.verifier import signatures

    from tests.support.server import Server  # a uvicorn process on loopback, ready when returned

    with tempfile.TemporaryDirectory() as tmp:
        server = Server(f"sqlite:///{tmp}/gw/gateway.db", Path(tmp) / "gw",
                        GPUPROOF_PROVIDER_RATE_PER_S="10000").start()
        db = Database(f"sqlite:///{tmp}/gw/gateway.db")
        market = GatewayClient(server.base, admin.create_api_key(db, "m", ["jobs"]))
        provider = GatewayClient(server.base, key=signatures.new_private_key())
        provider_id = str(provider.provider_id)  # made from the key above
        provider.register("bench", [{"model": "NVIDIA H100", "vram_gib": 80}])
        n = [0]

        def kept() -> CheckpointCommitter:
            n[0] += 1
            return CheckpointCommitter(interval, store=Path(tmp) / f"k{n[0]}", background=True)

        def sent() -> CheckpointCommitter:
            n[0] += 1
            jid = market.create_job("r", provider_id, "p", {"interval": interval}).id
            reporter = TrainingReporter(provider, jid)
            return CheckpointCommitter(interval, store=Path(tmp) / f"s{n[0]}", background=True,
                                       on_commit=reporter.send)

        variants = {"baseline (no commitments)": lambda: None, "root only": lambda: CheckpointCommitter(interval),
                    "root + kept on disk": kept, "root + kept + sent to the gateway": sent}
        times: dict[str, list[tuple[float, float, float]]] = {k: [] for k in variants}
        train(job, 50, None)  # warm-up
        try:
            for _ in range(args.repeats):
                for name, make in variants.items():
                    times[name].append(train(job, args.steps, make()))
        finally:
            server.stop()
            db.dispose()
    base = statistics.median(t[0] for t in times["baseline (no commitments)"])
    print(f"Reference job {job}, {args.steps} steps, a commitment every {interval} steps; "
          f"median of {args.repeats}\n")
    print("| variant | wall s | ms/step | loop time in the committer / step time | wall vs baseline (noisy) | target |")
    print("| --- | --- | --- | --- | --- | --- |")
    worst = 0.0
    for name, runs in times.items():
        wall = statistics.median(t[0] for t in runs)
        share = statistics.median(t[2] / t[1] for t in runs)
        worst = max(worst, share)
        print(f"| {name} | {wall:.3f} | {wall / args.steps * 1e3:.3f} | {share:.2%} | {wall / base - 1:+.1%} | < 5% |")
    return 0 if worst < 0.05 else 1


if __name__ == "__main__":
    sys.exit(main())
