"""Ed25519 signatures (RFC 8032) for provider requests, registrations, signed tree heads and replay
results, with `cryptography` (OpenSSL), checked strictly (below); every signed request pays one
verification (its cost: docs/performance.md, `python bench/cpu_bench.py`).

Pure: bytes in, bytes or a SignatureError out. Every signed message starts with its own domain string,
so a signature made for one purpose can never be replayed as another.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat
from gpuproof.kernels.errors import GpuproofError

# Version 2 of request signatures (X-Gpuproof-Signature-Version: 2): over the exact request target and
# body bytes, and the gateway's audience. Version 1 (gpuproof-request/1, no audience, and a registration
# signed over the gateway's re-serialisation of its devices) is refused with a reason (gateway/auth.py).
SIGNATURE_VERSION: Final = "2"
REQUEST_DOMAIN = "gpuproof-request/2"
UPLOAD_DOMAIN = "gpuproof-upload/2"
TREE_HEAD_DOMAIN = "gpuproof-tree-head/1"
REPLAY_DOMAIN = "gpuproof-replay-result/1"


class SignatureError(GpuproofError):
    """A signature or key is malformed or does not verify; the message says which."""


def new_private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_key_bytes(key: Ed25519PrivateKey) -> bytes:
    """The 32-byte Ed25519 seed of a private key."""
    return key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


def private_key_from_bytes(seed: bytes) -> Ed25519PrivateKey:
    if len(seed) != 32:
        raise SignatureError(f"an Ed25519 private key is 32 bytes, got {len(seed)}")
    return Ed25519PrivateKey.from_private_bytes(seed)


def public_key_bytes(key: Ed25519PrivateKey) -> bytes:
    """The 32-byte encoded Ed25519 public key."""
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


@functools.lru_cache(maxsize=65536)
def public_key_from_bytes(raw: bytes) -> Ed25519PublicKey:
    _strict_key(raw)
    try:
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise SignatureError("not a valid Ed25519 public key") from None


def sign(key: Ed25519PrivateKey, message: bytes) -> bytes:
    return key.sign(message)


_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493
# y of the two points of order 8 (the other small-order points have y = 0, 1 or p - 1); each y with either sign
# of x is a small-order point, and nothing else is (RFC 7748's curve has cofactor 8).
_Y8 = int.from_bytes(bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"), "little")
_SMALL_ORDER_Y = frozenset({0, 1, _P - 1, _Y8, _P - _Y8})


def _strict_point(raw: bytes, what: str) -> None:
    """Refuse a point encoding that RFC 8032 verification lets through but a strict verifier must not: a
    non-canonical y (y >= p) and a point of small order, whose "universal" signatures verify any message
    (the identity key 01 00..00 with R = identity and S = 0 did, through OpenSSL: issue 18)."""
    y = int.from_bytes(raw, "little") & ((1 << 255) - 1)
    if y >= _P:
        raise SignatureError(f"{what} is not a canonical Ed25519 point encoding (y >= 2^255 - 19)")
    if y in _SMALL_ORDER_Y:
        raise SignatureError(f"{what} is a point of small order (refused: such keys and signatures verify "
                             f"messages their signer never saw)")


def verify(public_key: bytes, message: bytes, signature: bytes) -> None:
    """Raise SignatureError unless `signature` is `public_key`'s Ed25519 signature of `message`.

    Strict, as libsodium's verification: besides RFC 8032's equation, the key and R must be canonical and
    not of small order, and S below the group order (tests/verifier/test_signatures.py checks agreement with
    libsodium on the ed25519-speccheck edge cases)."""
    if len(signature) != 64:
        raise SignatureError(f"an Ed25519 signature is 64 bytes, got {len(signature)}")
    public_key = bytes(public_key)
    _strict_key(public_key)
    _strict_point(signature[:32], "the signature's R")
    if int.from_bytes(signature[32:], "little") >= _L:
        raise SignatureError("the signature's S is not below the group order (non-canonical)")
    try:
        public_key_from_bytes(public_key).verify(signature, message)
    except InvalidSignature:
        raise SignatureError("signature does not verify") from None


@functools.lru_cache(maxsize=65536)
def _strict_key(raw: bytes) -> None:
    if len(raw) != 32:
        raise SignatureError(f"an Ed25519 public key is 32 bytes, got {len(raw)}")
    _strict_point(raw, "the public key")


def request_target(path: str, query: str) -> str:
    """The request target as signed: the path exactly as sent (percent-encoding untouched), then `?` and
    the query exactly as sent when the query is not empty; a bare `?` with nothing after it is not signed
    (HTTP servers cannot tell `/p?` from `/p`)."""
    return f"{path}?{query}" if query else path


def request_message(method: str, target: str, audience: str, timestamp: int, nonce: str, body: bytes) -> bytes:
    """What a provider (or validator) signs for one HTTP request, version 2 (docs/gateway.md,
    "Authentication"): the domain, the method as sent, the request target (`request_target`), the
    gateway's audience (GET /v1/identity: a signature for one gateway is refused by any other), the
    timestamp, the nonce and SHA-256 of the body's raw bytes (hex), joined by single newlines, UTF-8."""
    return request_message_for_digest(method, target, audience, timestamp, nonce, hashlib.sha256(body).hexdigest())


def request_message_for_digest(method: str, target: str, audience: str, timestamp: int, nonce: str,
                               body_sha256: str) -> bytes:
    """`request_message` from the body's SHA-256 (hex), for a body hashed while it streamed to disk."""
    return "\n".join([REQUEST_DOMAIN, method, target, audience, str(timestamp), nonce, body_sha256]).encode()


def upload_message(method: str, target: str, audience: str, timestamp: int, nonce: str, body_sha256: str,
                   length: int) -> bytes:
    """What a provider signs for an upload: `request_message`'s fields under its own domain
    (`gpuproof-upload/2`, so neither can be taken for the other) with the body's SHA-256 (hex) and length in
    bytes as declared in its headers (X-Gpuproof-Content-Sha256, Content-Length), so the gateway checks the
    signature before a byte of the body is read, and the body against both as it arrives."""
    return "\n".join([UPLOAD_DOMAIN, method, target, audience, str(timestamp), nonce, body_sha256,
                      str(length)]).encode()


def request_message_v1(method: str, path: str, timestamp: int, nonce: str, body: bytes) -> bytes:
    """Version 1 of `request_message` (no audience; the gateway no longer accepts it), kept only to re-check
    evidence stored under it: a training commitment's `request` without a `version` field."""
    return "\n".join(["gpuproof-request/1", method.upper(), path, str(timestamp), nonce,
                      hashlib.sha256(body).hexdigest()]).encode()


def tree_head_message(size: int, root: bytes, timestamp: float) -> bytes:
    """What the gateway signs for a transparency-log tree head."""
    return "\n".join([TREE_HEAD_DOMAIN, str(size), root.hex(), repr(float(timestamp))]).encode()


def replay_message(fields: dict) -> bytes:
    """What a validator signs for a segment replay: the audit, the roots and upload it checked, and its
    verdict (canonical JSON of `fields`, see gateway/routers/training.py `replay_fields`)."""
    import json

    return (REPLAY_DOMAIN + "\n" + json.dumps(fields, sort_keys=True, separators=(",", ":"))).encode()


def provider_id(public_key: bytes) -> str:
    """A provider's id: the first 16 bytes of SHA-256 of its raw 32-byte public key, as 32 lowercase hex
    characters."""
    return hashlib.sha256(public_key).hexdigest()[:32]
