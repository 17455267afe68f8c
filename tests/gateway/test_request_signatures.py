"""Request signatures, version 2 (issue 19): over the exact bytes sent (method, raw target, body), the
gateway's audience, timestamp and nonce; no server-side normalisation anywhere, registration included."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from gpuproof.client import signed_headers
from gpuproof.gateway.app import create_app
from gpuproof.gateway.settings import Settings
from gpuproof.verifier import signatures

from tests.gateway.test_api import Agent, assert_problem


def signed_registration(key, raw: bytes, audience: str) -> dict:  # noqa: ANN001
    pid = signatures.provider_id(signatures.public_key_bytes(key))
    return {"content": raw, "headers": signed_headers(key, pid, "POST", "/v1/providers", raw, audience=audience)}


def test_registration_signed_over_the_bytes_sent_passes_as_sent(gateway):
    """The normalisation bug: the gateway used to check a registration against its own re-serialisation of
    the devices (`count: 1` inserted, `16` written `16.0`, non-ASCII escaped), so a client that signed what
    it sent got 401. Now it signs the body's bytes, whatever their form."""
    key = signatures.new_private_key()
    raw = json.dumps({"public_key": signatures.public_key_bytes(key).hex(), "name": "Zürich box ✓",
                      "devices": [{"vram_gib": 16, "model": "cpu-reference"}]},
                     ensure_ascii=False, indent=1).encode()
    r = gateway.client.post("/v1/providers", **signed_registration(key, raw, gateway.audience))
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "Zürich box ✓" and r.json()["devices"][0]["count"] == 1


def test_a_registration_is_held_to_every_byte_and_its_header(gateway):
    key = signatures.new_private_key()
    raw = json.dumps({"public_key": signatures.public_key_bytes(key).hex(), "name": "box",
                      "devices": [{"model": "cpu-reference", "vram_gib": 16}]}).encode()
    signed = signed_registration(key, raw, gateway.audience)
    respaced = dict(signed, content=raw.replace(b", ", b","))  # the same JSON value, other bytes
    assert_problem(gateway.client.post("/v1/providers", **respaced), 401, "does not verify")
    other = dict(signed, headers=dict(signed["headers"], **{"X-Gpuproof-Provider": "ab" * 16}))
    assert_problem(gateway.client.post("/v1/providers", **other), 401, "X-Gpuproof-Provider")
    assert gateway.client.post("/v1/providers", **signed).status_code == 201


def test_version_1_signatures_are_refused_with_the_reason(gateway):
    """An agent older than version 2 (no X-Gpuproof-Signature-Version; a registration signed in its body)
    is told to upgrade, not given a bare 401 or 422."""
    agent = Agent(gateway)
    path, body = f"/v1/providers/{agent.id}/challenges", b'{"device": 0}'
    headers = signed_headers(agent.key, agent.id, "POST", path, body, audience=gateway.audience)
    del headers["X-Gpuproof-Signature-Version"]
    assert_problem(gateway.client.post(path, content=body, headers=headers), 401, "upgrade")
    old = {"public_key": "00" * 32, "name": "old", "devices": [{"model": "cpu-reference", "vram_gib": 8}],
           "signature": "00" * 64}
    r = gateway.client.post("/v1/providers", json=old)
    assert_problem(r, 401, "upgrade")
    r = gateway.client.post("/v1/providers", json=old, headers={k: v for k, v in headers.items()
                                                                if k != "X-Gpuproof-Provider"})
    assert_problem(r, 401, "upgrade")


def test_a_signature_for_one_gateway_is_refused_by_another(gateway, tmp_path):
    """The audience: a request the provider signed for gateway A, replayed at gateway B (where the same key
    is registered), is refused, and the detail names B's audience."""
    agent = Agent(gateway)
    other_app = create_app(Settings(data_dir=tmp_path / "other", database_url=f"sqlite:///{tmp_path / 'b.db'}",
                                    verify_test_shape="16,256,64,3", maintenance_interval_s=0))
    with TestClient(other_app) as other:
        b_audience = other.get("/v1/identity").json()["audience"]
        assert b_audience != gateway.audience
        assert other.post("/v1/providers", **signed_registration(
            agent.key, json.dumps({"public_key": signatures.public_key_bytes(agent.key).hex(), "name": "b",
                                   "devices": [{"model": "cpu-reference", "vram_gib": 8}]}).encode(),
            b_audience)).status_code == 201
        path, body = f"/v1/providers/{agent.id}/challenges", b'{"device": 0}'
        for_a = signed_headers(agent.key, agent.id, "POST", path, body, audience=gateway.audience)
        assert_problem(other.post(path, content=body, headers=for_a), 401, b_audience)
        for_b = signed_headers(agent.key, agent.id, "POST", path, body, audience=b_audience)
        assert other.post(path, content=body, headers=for_b).status_code in (201, 204)


def test_the_configured_audience_is_the_one_signed(tmp_path):
    settings = Settings(data_dir=tmp_path / "d", database_url=f"sqlite:///{tmp_path / 'c.db'}",
                        audience="https://gateway.example", maintenance_interval_s=0)
    with TestClient(create_app(settings)) as client:
        assert client.get("/v1/identity").json()["audience"] == "https://gateway.example"
    with pytest.raises(ValueError, match="audience"):
        Settings(audience="has space")


@pytest.mark.parametrize("sent, signed, status", [
    ("?device=0&x=a%20b", "?device=0&x=a%20b", 201),  # the raw query, as sent
    ("?device=0&x=a%20b", "?device=0&x=a+b", 401),  # not a re-encoding of it
    ("?device=0&b=1&a=2", "?device=0&a=2&b=1", 401),  # nor a reordering
    ("", "?", 401),  # no query: no `?`
])
def test_the_target_is_signed_exactly_as_sent(gateway, sent, signed, status):
    agent = Agent(gateway)
    path, body = f"/v1/providers/{agent.id}/challenges", b'{"device": 0}'
    headers = signed_headers(agent.key, agent.id, "POST", path + signed, body, audience=gateway.audience)
    assert gateway.client.post(path + sent, content=body, headers=headers).status_code == status


def test_the_path_is_signed_as_sent_not_as_decoded(gateway):
    agent = Agent(gateway)
    sent = f"/v1/providers/%{ord(agent.id[0]):02x}{agent.id[1:]}/challenges"  # routes to the same provider
    body = b'{"device": 0}'
    decoded = signed_headers(agent.key, agent.id, "POST", f"/v1/providers/{agent.id}/challenges", body,
                             audience=gateway.audience)
    assert_problem(gateway.client.post(sent, content=body, headers=decoded), 401, "does not verify")
    raw = signed_headers(agent.key, agent.id, "POST", sent, body, audience=gateway.audience)
    assert gateway.client.post(sent, content=body, headers=raw).status_code == 201
