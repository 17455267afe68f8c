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


_SIZE = select(LogHead.size).where(LogHead.id == 1)  # built once: read on every head, checkpoint and proof


def size(session: Session) -> int:
    return session.execute(_SIZE).scalar_one()


class LogCache:
    """Subtree hashes and signed checkpoints of the log kept in memory for the public reads (one per gateway
    process, `State.log_cache`): a committed subtree hash never changes (the log only grows), and a checkpoint
    of a size is the same text every time (Ed25519 signatures are deterministic), so a head, a checkpoint or a
    proof reads the database only for what no read has needed yet (issue 18: at a million entries each read
    cost a few milliseconds of queries). Only read sessions fill it (they see committed rows alone: a write
    transaction's own new hashes could still be rolled back). Bounded: when full it starts afresh."""

    MAX_CHECKPOINTS = 64

    def __init__(self, max_hashes: int = 200_000) -> None:
        self.max_hashes = max_hashes  # settings.log_cache_hashes (0: keeps none)
        self.hashes: dict[tuple[int, int], bytes] = {}
        self.checkpoints: dict[tuple[int, str], str] = {}

    def keep(self, key: tuple[int, int], value: bytes) -> None:
        if len(self.hashes) >= self.max_hashes:
            self.hashes = {}
            if not self.max_hashes:
                return
        self.hashes[key] = value

    def checkpoint(self, t: StoredTree, key, origin: str) -> str:  # noqa: ANN001
        """The signed checkpoint of tree `t`."""
        text = self.checkpoints.get((t.size, origin))
        if text is None:
            text = notes.Checkpoint(origin, t.size, t.root).sign(key)
            if len(self.checkpoints) >= self.MAX_CHECKPOINTS:
                self.checkpoints = {}
            if self.max_hashes:
                self.checkpoints[(t.size, origin)] = text
        return text


class StoredTree(merkle.TreeProofs):
    """The log's tree of `size` entries, read from the stored subtree hashes as a proof needs them (and from
    `cache` first, which it fills, when the session is a read session's: LogCache)."""

    def __init__(self, session: Session, size: int, cache: LogCache | None = None) -> None:
        self.session, self.size = session, size
        self._cache = cache if cache is not None and cache.max_hashes else None
        self._read: dict[tuple[int, int], bytes] = {} if self._cache is None else self._cache.hashes

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
            if self._cache is None:
                self._read[key] = found
            else:
                self._cache.keep(key, found)
                return found
        return self._read[key]


def tree(session: Session, tree_size: int | None = None, cache: LogCache | None = None) -> StoredTree:
    """The log's tree (of `tree_size` entries, default all); `cache` only with a read session (LogCache)."""
    return StoredTree(session, size(session) if tree_size is None else tree_size, cache)


def default_origin(public_key: bytes) -> str:
    """The log's origin when none is configured: named after its key, so replicas sharing the key agree and
    two logs with different keys never share an origin."""
    return f"gpuproof/log/{hashlib.sha256(public_key).hexdigest()[:16]}"


def checkpoint(session: Session, key, origin: str, cache: LogCache | None = None) -> str:  # noqa: ANN001
    """The current tree head as a signed C2SP checkpoint (the note text and its signature line)."""
    t = tree(session, cache=cache)
    return cache.checkpoint(t, key, origin) if cache is not None else notes.Checkpoint(origin, t.size, t.root).sign(key)


def signed_head(session: Session, key, now: float, origin: str,  # noqa: ANN001
                cache: LogCache | None = None) -> dict[str, Any]:
    """The JSON tree head: size, root, the signed checkpoint of them, the key (raw and as a note verifier
    key), and the older signature over (size, root, timestamp) for clients of earlier versions."""
    t = tree(session, cache=cache)
    root, public = t.root, signatures.public_key_bytes(key)
    signature = signatures.sign(key, signatures.tree_head_message(t.size, root, now))
    return {"size": t.size, "root": root.hex(), "origin": origin,
            "checkpoint": notes.Checkpoint(origin, t.size, root).sign(key) if cache is None else
            cache.checkpoint(t, key, origin),
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
