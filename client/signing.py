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


def signed_headers(key, provider_id: str, method: str, path: str, body: bytes,  # noqa: ANN001
                   timestamp: int | None = None, nonce: str | None = None,
                   content_type: str = "application/json") -> dict[str, str]:
    """Headers that authenticate one provider request (path includes the query string)."""
    ts = int(time.time()) if timestamp is None else timestamp
    nonce = nonce or secrets.token_urlsafe(18)
    signature = signatures.sign(key, signatures.request_message(method, path, ts, nonce, body))
    return {"X-Gpuproof-Provider": provider_id, "X-Gpuproof-Timestamp": str(ts), "X-Gpuproof-Nonce": nonce,
            "X-Gpuproof-Signature": signature.hex(), "Content-Type": content_type}


def signed_upload_headers(key, provider_id: str, method: str, path: str, body: bytes,  # noqa: ANN001
                          timestamp: int | None = None, nonce: str | None = None) -> dict[str, str]:
    """Headers that authenticate an upload before its body is read: the signature covers the body's
    SHA-256 (X-Gpuproof-Content-Sha256) and length (Content-Length; httpx sets it from the body)."""
    ts = int(time.time()) if timestamp is None else timestamp
    nonce = nonce or secrets.token_urlsafe(18)
    digest = hashlib.sha256(body).hexdigest()
    signature = signatures.sign(key, signatures.upload_message(method, path, ts, nonce, digest, len(body)))
    return {"X-Gpuproof-Provider": provider_id, "X-Gpuproof-Timestamp": str(ts), "X-Gpuproof-Nonce": nonce,
            "X-Gpuproof-Signature": signature.hex(), "X-Gpuproof-Content-Sha256": digest,
            "Content-Type": "application/octet-stream"}


def validator_headers(key, method: str, path: str, timestamp: int | None = None) -> dict[str, str]:  # noqa: ANN001
    """Headers that sign a bodiless request (a replay read) as the validator `key` (gateway/tenancy.py)."""
    ts = int(time.time()) if timestamp is None else timestamp
    nonce = secrets.token_urlsafe(18)
    signature = signatures.sign(key, signatures.request_message(method, path, ts, nonce, b""))
    return {"X-Gpuproof-Validator": signatures.public_key_bytes(key).hex(), "X-Gpuproof-Timestamp": str(ts),
            "X-Gpuproof-Nonce": nonce, "X-Gpuproof-Signature": signature.hex()}


def device_list(devices: list[dict]) -> list[dict]:
    """Devices in the exact form the gateway re-serialises and checks (model, count, vram_gib)."""
    return [{"model": str(d["model"]), "count": int(d.get("count", 1)), "vram_gib": float(d["vram_gib"])}
            for d in devices]


def registration(key, name: str, devices: list[dict]) -> dict:  # noqa: ANN001
    """The body of POST /v1/providers, signed by `key` (proof of possession)."""
    devices = device_list(devices)
    public_key = signatures.public_key_bytes(key)
    devices_json = json.dumps(devices, sort_keys=True, separators=(",", ":"))
    signature = signatures.sign(key, signatures.registration_message(public_key, name, devices_json))
    return {"public_key": public_key.hex(), "name": name, "devices": devices, "signature": signature.hex()}
