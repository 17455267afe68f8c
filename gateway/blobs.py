"""Content-addressed storage of uploaded checkpoints in the data directory (kept until the verdict).

A blob's name is the SHA-256 of its bytes; writes go to a temporary file that is flushed and renamed into
place, so a crash leaves either the whole blob or none. Several gateway processes share the directory
(docs/operations.md: replicas need a shared data directory for uploads).
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

_NAME = re.compile(r"^[0-9a-f]{64}$")


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.incoming = root / ".incoming"  # uploads being received (gateway.deps.upload_body)

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> BlobStore:
        return cls(data_dir / "uploads")

    def path(self, digest: str) -> Path:
        if not _NAME.match(digest):
            raise ValueError(f"not a SHA-256 hex digest: {digest!r}")
        return self.root / digest[:2] / digest

    def put_file(self, src: Path, digest: str) -> str:
        """Move `src`, whose SHA-256 is `digest` (computed while it was written), into place: flushed to
        disk, then renamed (src must be on the same filesystem, e.g. under this store's root)."""
        target = self.path(digest)
        if target.exists():
            return digest
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(src, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(src, target)
        return digest

    def delete(self, digest: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(digest).unlink()
