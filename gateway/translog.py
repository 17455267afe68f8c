"""The transparency log: every registration, commitment, opening request, verdict and settlement decision,
in an RFC 6962 tree.

Entries are canonical JSON (verifier/evidence.py: sorted keys, no spaces); leaf hash = SHA-256(0x00 || entry).
Appends happen in the same transaction as the state change they record, under a row lock on log_head, so indices are
consecutive and an entry exists exactly when its change does. Tree heads are signed with the gateway's
Ed25519 key over (size, root, timestamp).
"""

from __future__ import annotations

from typing import Any

from gpuproof.gateway.models import LogEntry, LogHead
from gpuproof.kernels import merkle
from gpuproof.verifier import evidence, signatures
from sqlalchemy import select
from sqlalchemy.orm import Session


def append(session: Session, kind: str, payload: dict[str, Any], now: float) -> int:
    """Append one entry inside the caller's transaction; returns its index. An entry about a challenge
    (its payload has a challenge_id) is found by it (`challenge_entries`)."""
    head = session.execute(select(LogHead).where(LogHead.id == 1).with_for_update()).scalar_one()
    idx = head.size
    body = evidence.entry_text(kind, now, payload)
    session.add(LogEntry(idx=idx, kind=kind, body=body, leaf_hash=evidence.leaf_of(body), created_at=now,
                         challenge_id=payload.get("challenge_id")))
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
    return [_entry_json(r) for r in rows]


def challenge_entries(session: Session, challenge_id: str) -> list[dict[str, Any]]:
    """Every entry about one challenge, in log order (commitment, opening request, verdict when honest)."""
    rows = session.execute(select(LogEntry).where(LogEntry.challenge_id == challenge_id)
                           .order_by(LogEntry.idx)).scalars()
    return [_entry_json(r) for r in rows]


def _entry_json(r: LogEntry) -> dict[str, Any]:
    return {"index": r.idx, "kind": r.kind, "entry": r.body, "leaf_hash": r.leaf_hash.hex()}
