"""The transparency log: every registration, commitment, opening request, verdict and settlement decision,
in an RFC 6962 tree.

Entries are canonical JSON (verifier/evidence.py: sorted keys, no spaces); leaf hash = SHA-256(0x00 || entry).
Appends happen in the same transaction as the state change they record, under a row lock on log_head, so indices are
consecutive and an entry exists exactly when its change does. Tree heads are C2SP tlog-checkpoints
(gpuproof.verifier.notes), signed notes by the gateway's Ed25519 key under the log's origin; the JSON head
also carries the older signature over (size, root, timestamp), which clients of earlier versions check.
"""

from __future__ import annotations

import hashlib
from typing import Any

from gpuproof.gateway.models import LogEntry, LogHead
from gpuproof.kernels import merkle
from gpuproof.verifier import evidence, notes, signatures
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


def default_origin(public_key: bytes) -> str:
    """The log's origin when none is configured: named after its key, so replicas sharing the key agree and
    two logs with different keys never share an origin."""
    return f"gpuproof/log/{hashlib.sha256(public_key).hexdigest()[:16]}"


def checkpoint(session: Session, key, origin: str) -> str:  # noqa: ANN001
    """The current tree head as a signed C2SP checkpoint (the note text and its signature line)."""
    t = tree(session)
    return notes.Checkpoint(origin, t.size, t.root).sign(key)


def signed_head(session: Session, key, now: float, origin: str) -> dict[str, Any]:  # noqa: ANN001
    """The JSON tree head: size, root, the signed checkpoint of them, the key (raw and as a note verifier
    key), and the older signature over (size, root, timestamp) for clients of earlier versions."""
    t = tree(session)
    root, public = t.root, signatures.public_key_bytes(key)
    signature = signatures.sign(key, signatures.tree_head_message(t.size, root, now))
    return {"size": t.size, "root": root.hex(), "origin": origin,
            "checkpoint": notes.Checkpoint(origin, t.size, root).sign(key),
            "verifier_key": notes.verifier_key(origin, public), "public_key": public.hex(),
            "timestamp": now, "signature": signature.hex()}


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
