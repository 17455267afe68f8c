"""Shared test helpers: the vector files and the GPU/nvcc guards."""

from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path

import pytest

VECTORS = Path(__file__).parent / "vectors"

# Tests make a provider's round due at will (next_due_at = 0) to run many rounds in seconds; the product's
# minimum gap between rounds (a tenth of the mean interval) would refuse that. It is off for every gateway the
# tests start, in this process and in the servers it spawns, unless a test sets it (tests/gateway/test_rounds.py
# checks the gap itself).
os.environ.setdefault("GPUPROOF_CHALLENGE_MIN_GAP_S", "0")
pytest_plugins = ["tests.support.s3"]  # the S3 server fixtures (moto_endpoint, s3)


def load_vectors(name: str) -> dict:
    return json.loads((VECTORS / name).read_text())


def cuda_reason() -> str | None:
    """None when a CUDA GPU is usable through CuPy, else why not."""
    from gpuproof.kernels.backend import cuda_status

    usable, reason = cuda_status()
    return None if usable else reason


def pytest_collection_modifyitems(config, items):
    gpu_skip = None
    nvcc_skip = None
    for item in items:
        if "gpu" in item.keywords:
            if gpu_skip is None:
                reason = cuda_reason()
                gpu_skip = pytest.mark.skip(reason=f"no CUDA GPU: {reason}") if reason else False
            if gpu_skip:
                item.add_marker(gpu_skip)
        if "nvcc" in item.keywords:
            if nvcc_skip is None:
                nvcc_skip = (pytest.mark.skip(reason="nvcc is not on PATH") if shutil.which("nvcc") is None
                             else False)
            if nvcc_skip:
                item.add_marker(nvcc_skip)


PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _postgres_reason() -> str | None:
    try:
        import psycopg

        with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=test", connect_timeout=3):
            return None
    except Exception as exc:  # any failure means: no usable server here
        return f"PostgreSQL at 127.0.0.1:5432 is not usable ({type(exc).__name__}: {str(exc).strip()[:80]})"


_PG = _postgres_reason()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'gateway.db'}"
        return
    if _PG is not None:
        pytest.skip(_PG)
    import psycopg

    name = f"gp_{secrets.token_hex(6)}"
    with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=test", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=test", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(autouse=True)
def no_write_transaction_left_open():
    """Every gateway endpoint run in this process (TestClient) ends its write transaction before it
    returns (gateway/sessions.py: otherwise SQLite's write lock is held while a worker thread is awaited)."""
    import sys

    sessions = sys.modules.get("gpuproof.gateway.sessions")
    before = len(sessions.LEFT_OPEN) if sessions is not None else 0
    yield
    sessions = sys.modules.get("gpuproof.gateway.sessions")
    if sessions is not None:
        assert sessions.LEFT_OPEN[before:] == [], "endpoints returned with a write transaction open"
