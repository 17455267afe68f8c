"""Signed uploads (checkpoint states): authenticated from their headers before a byte of the body is read,
then streamed to disk, hashed on the way and held to the signed length and SHA-256."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Header, Request
from gpuproof.gateway.auth import VERSION_HEADER_DOC, DeclaredBody, SignedProvider, signed_request
from gpuproof.gateway.problems import Problem
from gpuproof.gateway.state import State, StateDep
from gpuproof.verifier.ids import is_hex


@dataclass(frozen=True)
class Upload:
    """A request body on disk: its temporary file, SHA-256 (hex) and size."""

    path: Path
    sha256: str
    size: int




async def signed_upload(
    request: Request, state: StateDep,
    x_gpuproof_provider: Annotated[str | None, Header()] = None,
    x_gpuproof_timestamp: Annotated[str | None, Header()] = None,
    x_gpuproof_nonce: Annotated[str | None, Header()] = None,
    x_gpuproof_signature: Annotated[str | None, Header()] = None,
    x_gpuproof_content_sha256: Annotated[str | None, Header()] = None,
    content_length: Annotated[str | None, Header()] = None,
    x_gpuproof_signature_version: Annotated[str | None, Header(description=VERSION_HEADER_DOC)] = None,
) -> AsyncIterator[SignedProvider]:
    """signed_provider for an upload, from its headers alone: the signature covers the SHA-256 and length
    the headers declare (signatures.upload_message), so it is checked before a byte of the body is read
    (issue 18: unsigned uploads used to stream up to GPUPROOF_MAX_UPLOAD_BYTES to disk first). The body
    is then received by `receive_upload`, which holds it to what was signed."""
    headers = (x_gpuproof_provider, x_gpuproof_timestamp, x_gpuproof_nonce, x_gpuproof_signature)
    if any(h is None for h in headers) or x_gpuproof_content_sha256 is None:
        raise Problem(401, "Unauthenticated", "an upload is signed in its headers: X-Gpuproof-Provider, "
                      "X-Gpuproof-Timestamp, X-Gpuproof-Nonce, X-Gpuproof-Signature, X-Gpuproof-Content-Sha256")
    if content_length is None or not content_length.isdigit():
        raise Problem(411, "Length required", "an upload declares its length (Content-Length) and signs it")
    if not is_hex(x_gpuproof_content_sha256, 32):
        raise Problem(401, "Unauthenticated", "X-Gpuproof-Content-Sha256: expected 64 lowercase hex characters")
    declared = DeclaredBody(x_gpuproof_content_sha256, int(content_length))
    assert None not in headers  # for the type checker: checked above
    async with signed_request(request, state, lambda: declared.sha256, *headers, length=declared.size) as signed:  # type: ignore[arg-type]
        signed.declared = declared
        yield signed


SignedUploadDep = Annotated[SignedProvider, Depends(signed_upload, scope="function")]


@contextlib.asynccontextmanager
async def receive_upload(request: Request, state: State, declared: DeclaredBody) -> AsyncIterator[Upload]:
    """The body of an authenticated upload streamed to a temporary file in the uploads directory and
    hashed on the way, so a checkpoint upload never sits in the gateway's memory; cut off (400) as soon
    as it passes its declared length, refused (400) if its SHA-256 differs from the declared one. The file
    is deleted when the request ends unless the endpoint moved it into the local blob store (a rename)."""
    incoming = state.blobs.incoming  # local disk, whichever store keeps the blobs
    incoming.mkdir(parents=True, exist_ok=True)
    path = incoming / f"{secrets.token_hex(12)}.part"
    digest, size = hashlib.sha256(), 0
    try:
        with open(path, "wb") as fh:  # 64 KiB chunks: hashing and writing one is tens of microseconds
            async for chunk in request.stream():
                size += len(chunk)
                if size > declared.size:
                    raise Problem(400, "Body longer than signed", f"the body passed its declared length of "
                                  f"{declared.size} bytes")
                digest.update(chunk)
                fh.write(chunk)
        if size != declared.size:
            raise Problem(400, "Body shorter than signed", f"the body has {size} bytes, {declared.size} declared")
        if not hmac.compare_digest(digest.hexdigest(), declared.sha256):
            raise Problem(400, "Body differs from signed", "the body's SHA-256 differs from "
                          "X-Gpuproof-Content-Sha256")
        yield Upload(path, declared.sha256, size)
    finally:
        path.unlink(missing_ok=True)
