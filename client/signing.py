"""What a provider or validator signs to be heard: request headers and the registration body.

Pure functions of a key and a request; the clients (gpuproof.client) and the tests that speak raw HTTP
use the same ones. The messages themselves are defined in gpuproof.verifier.signatures.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time

from gpuproof.verifier import signatures


def _stamp(timestamp: int | None, nonce: str | None) -> tuple[int, str]:
    return (int(time.time()) if timestamp is None else timestamp), (nonce or secrets.token_urlsafe(18))


def signed_headers(key, provider_id: str, method: str, target: str, body: bytes, *, audience: str,  # noqa: ANN001
                   timestamp: int | None = None, nonce: str | None = None,
                   content_type: str = "application/json") -> dict[str, str]:
    """Headers that authenticate one provider request (version 2): `target` is the path and query exactly
    as they will be sent, `body` the exact bytes, `audience` the gateway's (GET /v1/identity)."""
    ts, nonce = _stamp(timestamp, nonce)
    signature = signatures.sign(key, signatures.request_message(method, target, audience, ts, nonce, body))
    return {"X-Gpuproof-Provider": provider_id, "X-Gpuproof-Timestamp": str(ts), "X-Gpuproof-Nonce": nonce,
            "X-Gpuproof-Signature": signature.hex(), "X-Gpuproof-Signature-Version": signatures.SIGNATURE_VERSION,
            "Content-Type": content_type}


def signed_upload_headers(key, provider_id: str, method: str, target: str, body: bytes, *,  # noqa: ANN001
                          audience: str, timestamp: int | None = None, nonce: str | None = None) -> dict[str, str]:
    """Headers that authenticate an upload before its body is read: the signature covers the body's
    SHA-256 (X-Gpuproof-Content-Sha256) and length (Content-Length; httpx sets it from the body)."""
    ts, nonce = _stamp(timestamp, nonce)
    digest = hashlib.sha256(body).hexdigest()
    signature = signatures.sign(key, signatures.upload_message(method, target, audience, ts, nonce, digest,
                                                               len(body)))
    return {"X-Gpuproof-Provider": provider_id, "X-Gpuproof-Timestamp": str(ts), "X-Gpuproof-Nonce": nonce,
            "X-Gpuproof-Signature": signature.hex(), "X-Gpuproof-Signature-Version": signatures.SIGNATURE_VERSION,
            "X-Gpuproof-Content-Sha256": digest, "Content-Type": "application/octet-stream"}


def validator_headers(key, method: str, target: str, *, audience: str,  # noqa: ANN001
                      timestamp: int | None = None) -> dict[str, str]:
    """Headers that sign a bodiless request (a replay read) as the validator `key` (gateway/tenancy.py)."""
    ts, nonce = _stamp(timestamp, None)
    signature = signatures.sign(key, signatures.request_message(method, target, audience, ts, nonce, b""))
    return {"X-Gpuproof-Validator": signatures.public_key_bytes(key).hex(), "X-Gpuproof-Timestamp": str(ts),
            "X-Gpuproof-Nonce": nonce, "X-Gpuproof-Signature": signature.hex(),
            "X-Gpuproof-Signature-Version": signatures.SIGNATURE_VERSION}


def device_list(devices: list[dict]) -> list[dict]:
    """Devices as this client sends them (model, count, vram_gib). The gateway checks the signature over
    the bytes sent, whatever their form; this only makes the claims' types definite."""
    return [{"model": str(d["model"]), "count": int(d.get("count", 1)), "vram_gib": float(d["vram_gib"])}
            for d in devices]


def registration_body(key, name: str, devices: list[dict]) -> bytes:  # noqa: ANN001
    """The body of POST /v1/providers: the key's public half, the name and the devices."""
    public_key = signatures.public_key_bytes(key)
    return json.dumps({"public_key": public_key.hex(), "name": name, "devices": device_list(devices)}).encode()


def registration(key, name: str, devices: list[dict], *, audience: str) -> dict:  # noqa: ANN001
    """POST /v1/providers as keyword arguments for an httpx (or TestClient) call, `content` and `headers`:
    the body, signed like any request by the key it names (proof of possession)."""
    body = registration_body(key, name, devices)
    pid = signatures.provider_id(signatures.public_key_bytes(key))
    return {"content": body, "headers": signed_headers(key, pid, "POST", "/v1/providers", body, audience=audience)}
