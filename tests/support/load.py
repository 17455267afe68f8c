"""Simulated agents for load tests: asyncio, httpx, the CPU backend, honouring Retry-After."""

from __future__ import annotations

import asyncio
import random
import time

from gpuproof.client import AsyncGatewayClient, GatewayError
from gpuproof.kernels.backend import Opening
from gpuproof.kernels.reference import CpuBackend
from gpuproof.verifier import signatures

from tests.support.calibrate import scaled


async def agent(base: str, deadline: float, stats: dict, reads_target: list) -> None:
    async with AsyncGatewayClient(base, key=signatures.new_private_key(), timeout=scaled(60)) as client:
        for attempt in range(5):  # a connection reset under load is retried, as any client would
            try:
                await client.register("load", [{"model": "cpu-reference", "vram_gib": 1}])
                break
            except GatewayError as exc:
                if exc.status not in (0, 409) or attempt == 4:
                    raise
                if exc.status == 409:  # the first attempt went through; its answer was lost
                    break
                await asyncio.sleep(0.2)
        if not reads_target:
            reads_target.append(client.provider_id)
        backend = CpuBackend()
        while time.monotonic() < deadline:
            try:
                c, probe, retry = await client.next_challenge(0)
                if c is None:
                    await asyncio.sleep((retry or 1) * random.uniform(0.8, 1.0))  # as the agent daemon does
                    continue
                params = c.params()
                roots = backend.run(params)
                req = await client.commit(c.challenge_id, roots)
                openings = []
                for r, i in sorted(set(req.pairs)):
                    values, path = backend.open(params, r, i, roots)
                    openings.append(Opening(r, i, values, tuple(path)).to_json())
                verdict = await client.open(c.challenge_id, openings)
                stats["verdicts"][c.challenge_id] = str(verdict.outcome)
            except GatewayError as exc:
                key = "transport" if exc.status == 0 else "5xx" if exc.status >= 500 else f"{exc.status} {exc.title}"
                stats["errors"][key] = stats["errors"].get(key, 0) + 1
                await asyncio.sleep(0.5)


async def agents(bases: list[str], count: int, seconds: float, stats: dict, reads_target: list) -> None:
    deadline = time.monotonic() + seconds
    await asyncio.gather(*(agent(bases[i % len(bases)], deadline, stats, reads_target) for i in range(count)))


