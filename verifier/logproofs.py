"""The gateway's log checked locally: a signed tree head, an entry's inclusion, one head extending another.

Pure: the SDK (gpuproof.client) fetches heads and proofs and hands them here as served (hex), so any other
client can check a log the same way. Every failure is a `LogVerificationError` with the reason: the
gateway's history cannot be trusted. The Merkle rules themselves are RFC 9162's, in gpuproof.kernels.merkle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gpuproof.kernels import merkle
from gpuproof.kernels.errors import GpuproofError, ProofError
from gpuproof.verifier import signatures


class LogVerificationError(GpuproofError):
    """A log response does not check out locally: the gateway's history cannot be trusted."""


@dataclass(frozen=True)
class TreeHead:
    """A signed tree head: the log's size and root at `timestamp`, signed by the gateway's log key."""

    size: int
    root: bytes
    timestamp: float
    signature: bytes
    public_key: bytes

    def to_json(self) -> dict[str, Any]:
        return {"size": self.size, "root": self.root.hex(), "timestamp": self.timestamp,
                "signature": self.signature.hex(), "public_key": self.public_key.hex()}

    @classmethod
    def parse(cls, data: dict[str, Any], pinned_key: bytes | None = None) -> TreeHead:
        """A tree head from JSON, its signature checked (and its key, when one is pinned)."""
        try:
            head = cls(int(data["size"]), bytes.fromhex(data["root"]), float(data["timestamp"]),
                       bytes.fromhex(data["signature"]), bytes.fromhex(data["public_key"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise LogVerificationError(f"malformed tree head: {exc}") from None
        if pinned_key is not None and head.public_key != pinned_key:
            raise LogVerificationError("tree head is signed by another key than the one pinned for this gateway")
        try:
            signatures.verify(head.public_key, signatures.tree_head_message(head.size, head.root, head.timestamp),
                              head.signature)
        except signatures.SignatureError as exc:
            raise LogVerificationError(f"tree head signature: {exc}") from None
        return head


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
