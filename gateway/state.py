"""The gateway's state (settings, database, verifier, signing key, rate limiter, trust cache, blob store), one
per app, and the dependency that hands it to a route; when a request arrived and how long it queued."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from gpuproof.gateway.blobs import BlobStore
from gpuproof.gateway.db import Database
from gpuproof.gateway.pages import Totals
from gpuproof.gateway.settings import Settings
from gpuproof.gateway.verify_pool import VerifyPool
from gpuproof.verifier.protocol import Verifier

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from gpuproof.gateway.limits import Limiter
    from gpuproof.gateway.translog import LogCache
    from gpuproof.gateway.trust_cache import TrustCache


@dataclass
class State:
    settings: Settings
    db: Database
    verifier: Verifier
    signing_key: Ed25519PrivateKey
    limiter: Limiter
    trust_cache: TrustCache
    blobs: BlobStore  # uploaded checkpoint states (gateway/blobs.py: local directory or S3)
    verify_pool: VerifyPool  # verification of openings, fair per identity (gateway/verify_pool.py)
    audience: str = ""  # what request signatures name this gateway by (settings.audience or its public key hex)
    totals: Totals = field(default_factory=Totals)  # the lists' capped totals, reused a few seconds (pages.py)
    log_cache: LogCache = field(default_factory=lambda: _log_cache())  # subtree hashes, checkpoints (translog)
    page_cache: TrustCache = field(default_factory=lambda: _page_cache())  # pages of GET /v1/providers
    front_cache: TrustCache = field(default_factory=lambda: _page_cache())  # the dashboard's front page

    @property
    def log_origin(self) -> str:
        """The origin line of the log's checkpoints, and the key name they are signed under."""
        from gpuproof.gateway.translog import default_origin
        from gpuproof.verifier.signatures import public_key_bytes

        return self.settings.log_origin or default_origin(public_key_bytes(self.signing_key))


def _log_cache() -> LogCache:
    from gpuproof.gateway.translog import LogCache

    return LogCache()


def _page_cache() -> TrustCache:
    from gpuproof.gateway.trust_cache import TrustCache

    return TrustCache(0.5, max_entries=PAGES_KEPT)


PAGES_KEPT = 256  # pages a page cache keeps (each up to ~100 kB): any reader can ask for new ones


async def get_state(request: Request) -> State:  # async: no thread-pool hop for a cheap lookup
    return request.app.state.gp


StateDep = Annotated[State, Depends(get_state)]


def queued_s(request: Request) -> float:
    """How long this request waited between arriving and its handler starting (0 if unknown)."""
    started = getattr(request.state, "started_at", None)
    return max(0.0, time.time() - started) if started else 0.0


def arrived_at(request: Request) -> float:
    """When the request's body had fully arrived (gateway.app.BodyLimit), else now."""
    return getattr(request.state, "body_at", None) or time.time()
