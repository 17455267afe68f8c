"""The transparency log: every registration, commitment, opening request, verdict and settlement decision,
in an RFC 6962 tree.

Entries are canonical JSON (verifier/evidence.py: sorted keys, no spaces); leaf hash = SHA-256(0x00 || entry).
Appends happen in the same transaction as the state change they record, under a row lock on log_head, so indices are
consecutive and an entry exists exactly when its change does. Tree heads are C2SP tlog-checkpoints
(gpuproof.verifier.notes), signed notes by the gateway's Ed25519 key under the log's origin; the JSON head
also carries the older signature over (size, root, timestamp), which clients of earlier versions check.

The tree is never rebuilt: each append stores the hashes of the complete subtrees it completes
(models.LogNode; at most log2(size) of them, one on average), and a head or proof reads the O(log^2 size)
subtree hashes RFC 6962 asks for (`StoredTree`), so they cost the same at a million entries as at ten.
"""

from __future__ import annotations

import hashlib
from typing import Any

from gpuproof.gateway.models import LogEntry, LogHead, LogNode
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
    leaf = evidence.leaf_of(body)
    session.add(LogEntry(idx=idx, kind=kind, body=body, leaf_hash=leaf, created_at=now,
                         challenge_id=payload.get("challenge_id")))
    node, size, height = leaf, idx + 1, 0
    while size % (2 << height) == 0:  # the entry completes a subtree of 2**(height+1) leaves: store its hash
        left = StoredTree(session, size).perfect(height, (size >> height) - 2)
        node, height = merkle.node_hash(left, node), height + 1
        session.add(LogNode(height=height, idx=(size >> height) - 1, hash=node))
    head.size = size
    return idx


def size(session: Session) -> int:
    return session.execute(select(LogHead.size).where(LogHead.id == 1)).scalar_one()


class StoredTree(merkle.TreeProofs):
    """The log's tree of `size` entries, read from the stored subtree hashes as a proof needs them."""

    def __init__(self, session: Session, size: int) -> None:
        self.session, self.size = session, size
        self._read: dict[tuple[int, int], bytes] = {}

    def perfect(self, height: int, index: int) -> bytes:
        key = (height, index)
        if key not in self._read:
            if height == 0:
                found = self.session.execute(select(LogEntry.leaf_hash).where(LogEntry.idx == index)).scalar()
            else:
                found = self.session.execute(select(LogNode.hash).where(LogNode.height == height,
                                                                       LogNode.idx == index)).scalar()
            if found is None:
                raise LookupError(f"the log has no stored hash of subtree {index} at height {height}")
            self._read[key] = found
        return self._read[key]


def tree(session: Session, tree_size: int | None = None) -> StoredTree:
    return StoredTree(session, size(session) if tree_size is None else tree_size)


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
