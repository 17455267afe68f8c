"""Health, readiness and metrics."""

from __future__ import annotations

from typing import cast

import anyio
import anyio.lowlevel
import anyio.to_thread
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import APIRouter, Response
from gpuproof.gateway import metrics, migrate
from gpuproof.gateway.problems import Problem
from gpuproof.gateway.sessions import threads_of_their_own
from gpuproof.gateway.state import StateDep
from gpuproof.verifier import signatures
from gpuproof.verifier.wire import HealthOut, IdentityOut, ReadyOut
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

router = APIRouter(tags=["health"])


_METRICS_THREAD: anyio.lowlevel.RunVar[anyio.CapacityLimiter] = anyio.lowlevel.RunVar("gpuproof_metrics_thread")


def _metrics_thread() -> anyio.CapacityLimiter:
    return threads_of_their_own(_METRICS_THREAD, None, 1)


class MetricsResponse(Response):
    """The Prometheus text exposition format (its media type in the API docs)."""

    media_type = CONTENT_TYPE_LATEST


@router.get("/healthz", operation_id="healthz", response_model=HealthOut)
def healthz() -> dict:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/v1/identity", operation_id="get_identity", response_model=IdentityOut, tags=["providers"])
def identity(state: StateDep) -> IdentityOut:
    """The audience request signatures must name (this gateway), its public key and the signature version
    it checks; public, and the same on every replica."""
    key = cast(Ed25519PrivateKey, state.signing_key)
    return IdentityOut(audience=state.audience, public_key=signatures.public_key_bytes(key).hex(),
                       signature_version=signatures.SIGNATURE_VERSION)


@router.get("/readyz", operation_id="readyz", response_model=ReadyOut)
def readyz(state: StateDep) -> dict:
    """The database is reachable and its migrations are current."""
    try:
        with state.db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        current = migrate.current_revision(state.db.engine)
    except Exception as exc:
        raise Problem(503, "Not ready", f"database unreachable: {type(exc).__name__}") from None
    head = migrate.head_revision(state.db.url)
    if current != head:
        raise Problem(503, "Not ready", f"database at migration {current}, code expects {head}")
    return {"status": "ready", "migration": current}


@router.get("/metrics", operation_id="metrics", response_class=MetricsResponse,
            responses={200: {"description": "the gateway's metrics, in the Prometheus text format"}})
async def get_metrics() -> Response:
    """Request latencies, verdicts, challenges issued and deferred, ... (gateway/metrics.py)."""
    metrics.flush()  # on the event loop, where the fast path counts (metrics.Tally); the text on a read thread
    # on one thread of its own: scrapes queue there, never on the event loop nor on the reads' threads
    text = await anyio.to_thread.run_sync(generate_latest, metrics.REGISTRY, limiter=_metrics_thread())
    return MetricsResponse(text)
