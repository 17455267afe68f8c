"""The gateway's log checked locally: a signed tree head (a C2SP checkpoint), an entry's inclusion, one head
extending another.

Pure: the SDK (gpuproof.client) fetches heads and proofs and hands them here as served (hex), so any other
client can check a log the same way. Every failure is a `LogVerificationError` with the reason: the
gateway's history cannot be trusted. The Merkle rules themselves are RFC 9162's, in gpuproof.kernels.merkle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gpuproof.kernels import merkle
from gpuproof.kernels.errors import GpuproofError, ProofError
from gpuproof.verifier import notes, signatures


class LogVerificationError(GpuproofError):
    """A log response does not check out locally: the gateway's history cannot be trusted."""


@dataclass(frozen=True)
class TreeHead:
    """A signed tree head: the log's size and root, signed by the gateway's log key `public_key`.

    A head from a current gateway carries its `checkpoint` (C2SP tlog-checkpoint, gpuproof.verifier.notes),
    verified on parsing; `origin` names the log. A head stored by an earlier version (and served by one)
    has none: its `signature` over (size, root, `timestamp`) is checked instead."""

    size: int
    root: bytes
    public_key: bytes
    checkpoint: str | None = None
    origin: str | None = None
    timestamp: float | None = None
    signature: bytes | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"size": self.size, "root": self.root.hex(), "public_key": self.public_key.hex()}
        if self.checkpoint is not None:
            out |= {"origin": self.origin, "checkpoint": self.checkpoint}
        if self.signature is not None:
            out |= {"timestamp": self.timestamp, "signature": self.signature.hex()}
        return out

    @classmethod
    def from_checkpoint(cls, note: str, public_key: bytes, origin: str | None = None) -> TreeHead:
        """A head from a signed checkpoint (the text GET /v1/log/checkpoint serves), verified with the log's
        `public_key` under its origin (and checked to be log `origin`'s, when given)."""
        try:
            cp = notes.Checkpoint.open(note, public_key, origin)
        except notes.NoteError as exc:
            raise LogVerificationError(f"checkpoint: {exc}") from None
        return cls(cp.size, cp.root, bytes(public_key), note, cp.origin)

    @classmethod
    def parse(cls, data: dict[str, Any], pinned_key: bytes | None = None, origin: str | None = None) -> TreeHead:
        """A tree head from JSON, its checkpoint's signature checked (a legacy head's older signature when it
        has no checkpoint), with its key when one is pinned and its origin when one is given; the JSON's size
        and root must be the checkpoint's."""
        try:
            public_key = bytes.fromhex(data["public_key"])
            size, root = int(data["size"]), bytes.fromhex(data["root"])
        except (KeyError, TypeError, ValueError) as exc:
            raise LogVerificationError(f"malformed tree head: {exc}") from None
        if pinned_key is not None and public_key != pinned_key:
            raise LogVerificationError("tree head is signed by another key than the one pinned for this gateway")
        if data.get("checkpoint") is not None:
            head = cls.from_checkpoint(str(data["checkpoint"]), public_key, origin or data.get("origin"))
            if (head.size, head.root) != (size, root):
                raise LogVerificationError(f"the tree head says size {size} and root {root.hex()}, its signed "
                                           f"checkpoint {head.size} and {head.root.hex()}")
            return head
        if origin is not None:
            raise LogVerificationError(f"the tree head has no checkpoint naming its log (want {origin!r})")
        return cls._legacy(data, size, root, public_key)

    @classmethod
    def _legacy(cls, data: dict[str, Any], size: int, root: bytes, public_key: bytes) -> TreeHead:
        """A head of an earlier version: signed over 'gpuproof-tree-head/1', size, root hex and repr(timestamp)."""
        try:
            timestamp, signature = float(data["timestamp"]), bytes.fromhex(data["signature"])
        except (KeyError, TypeError, ValueError) as exc:
            raise LogVerificationError(f"malformed tree head: {exc}") from None
        try:
            signatures.verify(public_key, signatures.tree_head_message(size, root, timestamp), signature)
        except signatures.SignatureError as exc:
            raise LogVerificationError(f"tree head signature: {exc}") from None
        return cls(size, root, public_key, timestamp=timestamp, signature=signature)


def verify_inclusion(head: TreeHead, index: int, entry: str, proof: list[str]) -> None:
    """Check that `entry` (the canonical JSON text as served) is leaf `index` of the tree `head` signs;
    `proof` is the hex hashes of the gateway's answer to GET /v1/log/inclusion (its "proof")."""
    try:
        merkle.verify_inclusion(index, head.size, merkle.leaf_hash(entry.encode()),
                                [bytes.fromhex(h) for h in proof], head.root)
    except (ProofError, KeyError, TypeError, ValueError) as exc:
        raise LogVerificationError(f"entry {index} is not in the signed tree of {head.size}: {exc}") from None


def verify_consistency(old: TreeHead, new: TreeHead, proof: list[str]) -> None:
    """Check that the tree `new` signs extends the tree `old` signs (nothing was rewritten); `proof` is the
    hex hashes of the gateway's answer to GET /v1/log/consistency (its "proof")."""
    if new.size < old.size:
        raise LogVerificationError(f"the log shrank from {old.size} to {new.size} entries")
    try:
        merkle.verify_consistency(old.size, new.size, old.root, new.root, [bytes.fromhex(h) for h in proof])
    except (ProofError, KeyError, TypeError, ValueError) as exc:
        raise LogVerificationError(f"the log of {new.size} entries does not extend the one of {old.size} "
                                   f"entries seen before: {exc}") from None
