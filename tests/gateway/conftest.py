"""Gateway fixtures: a fresh database per test, on SQLite and on the PostgreSQL at 127.0.0.1:5432."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient
from gpuproof.gateway.app import create_app
from gpuproof.gateway.settings import Settings


@dataclass
class Gateway:
    client: TestClient
    settings: Settings
    app: object

    @property
    def audience(self) -> str:
        """What request signatures to this gateway name (GET /v1/identity)."""
        return self.app.state.gp.audience  # type: ignore[attr-defined]


@pytest.fixture
def gateway(database_url, tmp_path):
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url, verify_test_shape="16,256,64,3",
                        challenge_interval_s=3600, provider_rate_per_s=1000, ip_rate_per_s=10000,
                        maintenance_interval_s=0)  # tests sweep explicitly (maintenance.sweep), never behind their back
    app = create_app(settings)
    with TestClient(app) as client:
        yield Gateway(client, settings, app)
