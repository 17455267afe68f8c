"""The transparency log: every registration, verdict and settlement decision, in an RFC 6962 tree.

Entries are canonical JSON (sorted keys, no spaces); leaf hash = SHA-256(0x00 || entry). Appends happen in
the same transaction as the state change they record, under a row lock on log_head, so indices are
consecutive and an entry exists exactly when its change does. Tree heads are signed with the gateway's
Ed25519 key over (size, root, timestamp).
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.models import LogEntry, LogHead
from kernels import merkle
from verifier import signatures


def canonical(payload: dict[str, Any]) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"))


def append(session: Session, kind: str, payload: dict[str, Any], now: float) -> int:
    """Append one entry inside the caller's transaction; returns its index."""
    head = session.execute(select(LogHead).where(LogHead.id == 1).with_for_update()).scalar_one()
    idx = head.size
    body = canonical({"kind": kind, "at": now, **payload})
    session.add(LogEntry(idx=idx, kind=kind, body=body, leaf_hash=merkle.leaf_hash(body.encode()), created_at=now))
    head.size = idx + 1
    return idx


def size(session: Session) -> int:
    return session.execute(select(LogHead.size).where(LogHead.id == 1)).scalar_one()


def tree(session: Session, tree_size: int | None = None) -> merkle.MerkleTree:
    n = size(session) if tree_size is None else tree_size
    rows = session.execute(select(LogEntry.leaf_hash).where(LogEntry.idx < n).order_by(LogEntry.idx)).scalars()
    return merkle.MerkleTree(b"".join(rows))


def signed_head(session: Session, key, now: float) -> dict[str, Any]:  # noqa: ANN001
    t = tree(session)
    root = t.root
    signature = signatures.sign(key, signatures.tree_head_message(t.size, root, now))
    return {"size": t.size, "root": root.hex(), "timestamp": now, "signature": signature.hex(),
            "public_key": signatures.public_key_bytes(key).hex()}


def entries(session: Session, start: int, end: int) -> list[dict[str, Any]]:
    rows = session.execute(select(LogEntry).where(LogEntry.idx >= start, LogEntry.idx < end)
                           .order_by(LogEntry.idx)).scalars()
    return [{"index": r.idx, "kind": r.kind, "entry": r.body, "leaf_hash": r.leaf_hash.hex()} for r in rows]
