"""Operator actions run against the database directly (the `gpuproof gateway` commands)."""

from __future__ import annotations

import re
import secrets
import time

from gpuproof.gateway import API_KEY_SCOPES
from gpuproof.gateway.auth import hash_api_secret
from gpuproof.gateway.db import Database
from gpuproof.gateway.models import ApiKey
from gpuproof.kernels.errors import InvalidParameter

SCOPES = tuple(API_KEY_SCOPES)


def create_api_key(db: Database, name: str, scopes: list[str], tenant: str | None = None) -> str:
    """Store a new marketplace API key (hashed) and return the token, which is shown once. The key acts for
    `tenant` (default: its name): it sees only that tenant's jobs and validators."""
    if not re.fullmatch(r"[\w .@-]{1,100}", name):
        raise InvalidParameter("--name", "1 to 100 letters, digits, spaces or . _ @ -")
    tenant = name if tenant is None else tenant
    if not re.fullmatch(r"[\w .@-]{1,100}", tenant):
        raise InvalidParameter("--tenant", "1 to 100 letters, digits, spaces or . _ @ -")
    unknown = sorted(set(scopes) - set(SCOPES))
    if not scopes or unknown:
        raise InvalidParameter("--scope", f"expected one or more of {', '.join(SCOPES)}, got {scopes}")
    key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32).replace("_", "-")
    with db.writer() as session:
        session.add(ApiKey(id=key_id, name=name, key_hash=hash_api_secret(secret), scopes=",".join(sorted(set(scopes))),
                           created_at=time.time(), tenant=tenant))
        session.commit()
    return f"gpk_{key_id}_{secret}"
