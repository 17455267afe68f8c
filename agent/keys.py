"""The provider's Ed25519 key file (hex seed, mode 0600)."""

from __future__ import annotations

import os
from pathlib import Path

from gpuproof.kernels.errors import GpuproofError, InvalidParameter
from gpuproof.verifier import signatures


def create(path: Path, force: bool = False):  # noqa: ANN201
    """Make a new key at `path` (0600). Refuses to overwrite an existing key unless `force`."""
    if path.exists() and not force:
        raise InvalidParameter("--force", f"{path} already holds a key; pass --force to replace it "
                               "(the provider registered with it loses its identity)")
    path.parent.mkdir(parents=True, exist_ok=True)
    key = signatures.new_private_key()
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(signatures.private_key_bytes(key).hex() + "\n")
    os.replace(tmp, path)
    return key


def load(path: Path):  # noqa: ANN201
    """The key at `path`, with a clear error for a missing, unreadable or malformed file."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        raise GpuproofError(f"no provider key at {path}: run `gpuproof agent init` first") from None
    except OSError as exc:
        raise GpuproofError(f"cannot read the provider key {path}: {exc.strerror}") from None
    try:
        return signatures.private_key_from_bytes(bytes.fromhex(text))
    except (ValueError, signatures.SignatureError):
        raise GpuproofError(f"{path} is not a gpuproof provider key (64 hex characters)") from None
