#!/usr/bin/env python3
"""Detection rates of the training-proof cheats (docs/threat-model.md), through the real gateway flow.

    python bench/training_attacks.py [--runs 20] [--honest 200]

Each run: a job with the policy below on an in-process gateway (SQLite in a temporary directory), a
provider training the reference MLP (agent.training.run_reference_job, 24 steps, a commitment every 4:
6 segments), the gateway drawing q=2 segments and 6 chunks, a validator replaying them
(agent.training.replay_job). A run is caught when a flag is raised or a segment fails. Partial cheats
(one segment of six) are caught only when that segment is drawn: 1 - C(5,2)/C(6,2) = 1/3 expected.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from gpuproof.agent.training import replay_job, run_reference_job  # noqa: E402
from gpuproof.client import GatewayClient  # noqa: E402
from gpuproof.gateway import admin  # noqa: E402
from gpuproof.gateway.app import create_app  # noqa: E402
from gpuproof.gateway.settings import Settings  # noqa: E402
from gpuproof.simulators.training import CHEATS, cheating_run  # noqa: E402
from gpuproof.verifier import signatures  # noqa: E402
from gpuproof.verifier.checkpoints import manifest  # noqa: E402
from gpuproof.verifier.training import Received, TrainingPolicy, draw_audits  # noqa: E402

# A 60 ms stand-in step time and a 50 ms floor: like a real job, a step takes far longer than a commitment's
# round trip, so a burst of commitments is far faster than training could be, and an honest run never is.
INTERVAL = 4
POLICY = {"interval": INTERVAL, "segments": 2, "chunks": 6, "mode": "exact", "min_step_s": 0.05,
          "workload": {"name": "mlp", "params": {"seed": 7, "hidden": 32}}}
STEPS, DELAY = 24, 0.06


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="runs per cheat")
    parser.add_argument("--honest", type=int, default=200, help="honest runs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp) / "gw", provider_rate_per_s=10_000, ip_rate_per_s=100_000)
        with TestClient(create_app(settings)) as http:
            db = http.app.state.gp.db  # type: ignore[attr-defined]
            transport = http._transport
            market = GatewayClient("http://testserver", admin.create_api_key(db, "m", ["jobs", "settle"]),
                                   transport=transport)
            validator = GatewayClient("http://testserver", admin.create_api_key(db, "v", ["replay"]),
                                      transport=transport)
            vkey = signatures.new_private_key()
            market.register_validator(signatures.public_key_bytes(vkey).hex(), "v")  # jobs name it (tenancy)
            provider = GatewayClient("http://testserver", key=signatures.new_private_key(), transport=transport)
            provider_id = str(provider.provider_id)  # made from the key above
            provider.register("bench", [{"model": "NVIDIA H100", "vram_gib": 80}])
            counter = [0]

            def run(cheat: str | None, segments: set[int] | None = None) -> dict:
                counter[0] += 1
                jid = market.create_job("r", provider_id, "p", POLICY).id
                run_reference_job(provider, jid, POLICY, Path(tmp) / f"s{counter[0]}", STEPS, DELAY,
                                  cheating_run(cheat, INTERVAL, segments) if cheat else None)
                replay_job(validator, jid, vkey)
                report = market.training(jid)
                report["caught"] = bool(report["flags"]) or any(a["outcome"] == "fail" for a in report["audits"])
                return report

            rows = []
            t0 = time.perf_counter()
            for name, what in sorted(CHEATS.items()):
                caught = sum(run(name)["caught"] for _ in range(args.runs))
                rows.append((name, what, args.runs, caught, 1.0))
            expected = 1 - math.comb(5, 2) / math.comb(6, 2)
            when_drawn = [0, 0]  # partial cheats: runs whose cheating segment was drawn, and of those caught
            for name in ("skip-steps", "fewer-batches"):
                reports = [run(name, {0}) for _ in range(args.runs * 3)]
                drawn = [r for r in reports if any(a["start_step"] == 0 for a in r["audits"])]
                when_drawn[0] += len(drawn)
                when_drawn[1] += sum(r["caught"] for r in drawn)
                rows.append((f"{name}, 1 of 6 segments", CHEATS[name] + " (in one segment only)", args.runs * 3,
                             sum(r["caught"] for r in reports), expected))
            if args.honest:
                honest_failed = sum(run(None)["caught"] for _ in range(args.honest))
                rows.append(("honest", "trains every step on the committed batches", args.honest, honest_failed,
                             0.0))
            seconds = time.perf_counter() - t0
    print(f"Training proofs: {STEPS} steps, a commitment every {INTERVAL} (6 segments), q=2 segments "
          f"and 6 chunks audited, exact replay ({seconds:.0f} s)\n")
    print("| strategy | what it does | runs | caught | rate | expected |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, what, runs, caught, exp in rows:
        print(f"| {name} | {what} | {runs} | {caught} | {caught / runs:.1%} | {exp:.1%} |")
    draws = 30_000  # the draw alone, with the gateway's own function: how often segment 0 is audited
    received = [Received(step=4 * i, root=bytes(32), batch_hash=bytes(32), prev_hash=bytes(32), hash=bytes(32),
                         manifest=tuple(manifest({"w": np.zeros(300, np.float32)})), received_at=float(i))
                for i in range(STEPS // INTERVAL + 1)]
    policy = TrainingPolicy.parse(POLICY)
    hits = sum(any(d.start_step == 0 for d in draw_audits(received, policy)) for _ in range(draws))
    print(f"\nPartial cheats whose cheating segment was drawn: {when_drawn[0]}, caught {when_drawn[1]}. "
          f"The draw alone audits a given segment in {hits / draws:.1%} of {draws} draws (expected {expected:.1%}).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
