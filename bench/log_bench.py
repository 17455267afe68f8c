#!/usr/bin/env python3
"""The log's public reads against its size (issue 18: at 1M entries the head and proofs took 2.4-3.7 s).

    python bench/log_bench.py [--entries 1000,1000000] [--reads 5]

For each size, a fresh SQLite gateway (in-process, through the ASGI app) gets that many log entries written
as rows (what appends write: the entries, and the stored subtree hashes where the schema has them), then
times `GET /v1/log/head`, an inclusion proof of a middle entry and a consistency proof from half the size.
Prints the median of `--reads` reads each and the ratio of the largest size's time to the smallest's. Run
it on two commits to compare.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import reads  # noqa: E402  (bench/reads.py)
from fastapi.testclient import TestClient  # noqa: E402
from gpuproof.gateway import models  # noqa: E402
from gpuproof.gateway.app import create_app  # noqa: E402
from gpuproof.gateway.settings import Settings  # noqa: E402
from gpuproof.kernels import merkle  # noqa: E402
from sqlalchemy import insert, update  # noqa: E402

BATCH = 50_000


def fill(app, count: int) -> None:  # noqa: ANN001
    bodies = [f'{{"at":0,"kind":"test","n":{i}}}' for i in range(count)]
    leaves = [merkle.leaf_hash(b.encode()) for b in bodies]
    with app.state.gp.db.writer() as session:
        start = session.execute(models.LogHead.__table__.select()).one().size
        assert start == 0, "a fresh gateway's log is empty"
        for lo in range(0, count, BATCH):
            session.execute(insert(models.LogEntry), [
                {"idx": i, "kind": "test", "body": bodies[i], "leaf_hash": leaves[i], "created_at": 0.0}
                for i in range(lo, min(count, lo + BATCH))])
        if hasattr(models, "LogNode"):
            nodes = merkle.MerkleTree(b"".join(leaves)).perfect_nodes()
            for lo in range(0, len(nodes), BATCH):
                session.execute(insert(models.LogNode), [{"height": h, "idx": i, "hash": x}
                                                         for h, i, x in nodes[lo:lo + BATCH]])
        session.execute(update(models.LogHead).where(models.LogHead.id == 1).values(size=count))
        session.commit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", default="1000,1000000")
    parser.add_argument("--reads", type=int, default=5)
    args = parser.parse_args()
    sizes = [int(c) for c in args.entries.split(",")]
    names = ("GET /v1/log/head", "GET /v1/log/inclusion (middle entry)", "GET /v1/log/consistency (half -> all)")
    table: dict[str, list[float]] = {n: [] for n in names}
    for size in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            settings = Settings(data_dir=Path(tmp) / "d", database_url=f"sqlite:///{tmp}/g.db",
                                ip_rate_per_s=100_000, maintenance_interval_s=0)
            app = create_app(settings)
            with TestClient(app) as client:
                fill(app, size)
                paths = ("/v1/log/head", f"/v1/log/inclusion?index={size // 2}&size={size}",
                         f"/v1/log/consistency?old={size // 2}&new={size}")
                for name, path in zip(names, paths, strict=True):
                    table[name].append(reads.median_get(client, path, args.reads))
    reads.print_ratio_table({f"`{n}`": t for n, t in table.items()}, [f"{s:,} entries" for s in sizes])


if __name__ == "__main__":
    main()
