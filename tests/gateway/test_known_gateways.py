"""A gateway cannot collect requests signed for another (review of 2026-11-30): a client learns a gateway's
audience from GET /v1/identity, so a malicious gateway A could answer with gateway B's and replay at B what
the client then signed. The client holds the identity to the log key it pinned, and the command line holds
it to what this machine saw before (cli.common.known_gateways, like ssh's known hosts)."""

from __future__ import annotations

import httpx
import pytest
from gpuproof.cli.common import known_gateways, known_gateways_path
from gpuproof.client import GatewayClient
from gpuproof.kernels.errors import GpuproofError
from gpuproof.verifier import signatures


def impostor(identity: dict, seen: list[str]) -> httpx.MockTransport:
    """Gateway A: answers GET /v1/identity with `identity` (gateway B's) and records every other request."""
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/identity":
            return httpx.Response(200, json=identity)
        seen.append(f"{request.method} {request.url.path}")
        return httpx.Response(500, json={"title": "replayed elsewhere", "status": 500, "detail": "captured"})
    return httpx.MockTransport(handle)


def test_a_gateway_naming_itself_as_another_gets_no_signed_request(gateway, tmp_path, monkeypatch):
    monkeypatch.setenv("GPUPROOF_CONFIG_DIR", str(tmp_path / "config"))
    key = signatures.new_private_key()
    real = GatewayClient("http://gateway-b.example", key=key, transport=gateway.client._transport,
                         identity_check=known_gateways)
    real.register("box", [{"model": "cpu-reference", "vram_gib": 8}])  # B's identity is now known at its address
    identity = gateway.client.get("/v1/identity").json()
    assert identity["audience"] == gateway.audience and known_gateways_path().exists()

    seen: list[str] = []
    relay = GatewayClient("http://gateway-a.example", key=key, transport=impostor(identity, seen),
                          identity_check=known_gateways)
    with pytest.raises(GpuproofError, match="the identity of the gateway at http://gateway-b.example"):
        relay.next_challenge(0)
    assert seen == []  # nothing signed reached A

    renamed = GatewayClient("http://gateway-b.example", key=key,
                            transport=impostor(identity | {"audience": "another"}, seen), identity_check=known_gateways)
    with pytest.raises(GpuproofError, match="when this machine first used it"):
        renamed.next_challenge(0)
    assert seen == []


def test_a_pinned_log_key_is_the_only_identity_a_client_signs_for(gateway):
    identity = gateway.client.get("/v1/identity").json()
    other = signatures.public_key_bytes(signatures.new_private_key())
    seen: list[str] = []
    client = GatewayClient("http://gateway-a.example", key=signatures.new_private_key(), pinned_log_key=other,
                           transport=impostor(identity, seen))
    with pytest.raises(GpuproofError, match="not the log key pinned for it"):
        client.next_challenge(0)
    assert seen == []
    pinned = GatewayClient("http://testserver", key=signatures.new_private_key(),
                           pinned_log_key=bytes.fromhex(identity["public_key"]), transport=gateway.client._transport)
    pinned.register("box", [{"model": "cpu-reference", "vram_gib": 8}])  # the pinned key's gateway: signed
