"""Client-side helpers for talking to the gateway: signed provider requests and registrations.

(The full SDK with typed methods is the agent issue; this is the signing it will build on.)
"""

from __future__ import annotations

import json
import secrets
import time

from verifier import signatures


def signed_headers(key, provider_id: str, method: str, path: str, body: bytes,  # noqa: ANN001
                   timestamp: int | None = None, nonce: str | None = None) -> dict[str, str]:
    """Headers that authenticate one provider request (path includes the query string)."""
    ts = int(time.time()) if timestamp is None else timestamp
    nonce = nonce or secrets.token_urlsafe(18)
    signature = signatures.sign(key, signatures.request_message(method, path, ts, nonce, body))
    return {"X-Gpuproof-Provider": provider_id, "X-Gpuproof-Timestamp": str(ts), "X-Gpuproof-Nonce": nonce,
            "X-Gpuproof-Signature": signature.hex(), "Content-Type": "application/json"}


def registration(key, name: str, devices: list[dict]) -> dict:  # noqa: ANN001
    """The body of POST /v1/providers, signed by `key` (proof of possession)."""
    devices = [{"model": str(d["model"]), "count": int(d.get("count", 1)), "vram_gib": float(d["vram_gib"])}
               for d in devices]  # the exact form the gateway re-serialises and checks
    public_key = signatures.public_key_bytes(key)
    devices_json = json.dumps(devices, sort_keys=True, separators=(",", ":"))
    signature = signatures.sign(key, signatures.registration_message(public_key, name, devices_json))
    return {"public_key": public_key.hex(), "name": name, "devices": devices, "signature": signature.hex()}
