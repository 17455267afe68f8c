#!/usr/bin/env python3
"""Public listings against the number of providers (issue 18: "every public read costs O(page)").

    python bench/listing_bench.py [--providers 100,3000] [--reads 5]

For each count, a fresh SQLite gateway (in-process, through the ASGI app) gets that many providers: 20
registered through the API, the rest written straight into the tables (the rows a registration writes:
provider, device, and the stored score where the schema has one); then times the reads a stranger can
send for free: `GET /v1/providers?min_lower_bound=0&limit=1`, `GET /v1/providers?limit=1`, the dashboard
`GET /`. Prints the median of `--reads` reads each, and the
ratio of the largest count's time to the smallest's (1 means O(page)). Run it on two commits to compare.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import reads  # noqa: E402  (bench/reads.py)
from fastapi.testclient import TestClient  # noqa: E402
from gpuproof.client import registration  # noqa: E402
from gpuproof.gateway import models  # noqa: E402
from gpuproof.gateway.app import create_app  # noqa: E402
from gpuproof.gateway.settings import Settings  # noqa: E402
from gpuproof.verifier import signatures  # noqa: E402
from gpuproof.verifier.trust import score  # noqa: E402

PATHS = ("/v1/providers?min_lower_bound=0&limit=1", "/v1/providers?limit=1", "/")


def fill(app, count: int, client: TestClient) -> None:  # noqa: ANN001
    """`count` providers: 20 through the API, the rest as rows (what registration writes)."""
    for _ in range(min(20, count)):
        body = registration(signatures.new_private_key(), "listed", [{"model": "cpu-reference", "vram_gib": 8}],
                            audience=app.state.gp.audience)
        assert client.post("/v1/providers", **body).status_code == 201
    now, prior = time.time(), score([], time.time())
    scored = hasattr(models, "ProviderScore")
    with app.state.gp.db.writer() as session:
        ids = [secrets.token_hex(16) for _ in range(count - min(20, count))]
        for i, pid in enumerate(ids):
            session.add(models.Provider(id=pid, public_key=secrets.token_bytes(32), name=f"row {i}", created_at=now))
        session.flush()  # the providers' rows before the rows that name them
        for pid in ids:
            session.add(models.Device(provider_id=pid, position=0, model="cpu-reference", count=1, vram_gib=8,
                                      profile="cpu-reference", next_due_at=0.0))
            if scored:
                session.add(models.ProviderScore(provider_id=pid, score=prior.score, lower_bound=prior.lower_bound,
                                                 evidence=0, status=prior.status, computed_at=now))
        session.commit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--providers", default="100,3000")
    parser.add_argument("--reads", type=int, default=5)
    args = parser.parse_args()
    counts = [int(c) for c in args.providers.split(",")]
    table: dict[str, list[float]] = {p: [] for p in PATHS}
    for count in counts:
        with tempfile.TemporaryDirectory() as tmp:
            settings = Settings(data_dir=Path(tmp) / "d", database_url=f"sqlite:///{tmp}/g.db",
                                registrations_per_ip_per_hour=10_000, registrations_per_s_global=10_000,
                                ip_rate_per_s=100_000, maintenance_interval_s=0)
            app = create_app(settings)
            with TestClient(app) as client:
                fill(app, count, client)
                for path in PATHS:
                    table[path].append(reads.median_get(client, path, args.reads))
    reads.print_ratio_table({f"`GET {p}`": t for p, t in table.items()}, [f"{c} providers" for c in counts])


if __name__ == "__main__":
    main()
