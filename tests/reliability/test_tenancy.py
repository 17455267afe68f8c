"""Tenancy (issue 18): a marketplace sees and settles only its own jobs; only the validators a job names
read its uploads and judge its audits; private references never reach public pages or log entries."""

from __future__ import annotations

import hashlib
import json

import pytest
from gpuproof.agent.training import replay_job, run_reference_job
from gpuproof.client import GatewayClient, GatewayError
from gpuproof.gateway import admin
from gpuproof.verifier import signatures, training

from tests.gateway.test_training import DELAY, POLICY, World

SECRET_RENTER, SECRET_PRICE = "renter-SECRET-a7", "usd:SECRET-99"


@pytest.fixture
def world(gateway, tmp_path):
    return World(gateway, tmp_path)


def client(world, name, scopes, tenant=None):
    token = admin.create_api_key(world.gw.app.state.gp.db, name, scopes, tenant)
    return GatewayClient("http://testserver", token, transport=world.transport)


def status_of(call, *args):
    with pytest.raises(GatewayError) as info:
        call(*args)
    return info.value.status


def test_another_marketplaces_key_can_neither_read_nor_settle_its_jobs(world):
    provider = world.provider()
    job = world.market.create_job(SECRET_RENTER, provider.provider_id, SECRET_PRICE)
    rival = client(world, "rival", ["jobs", "settle"])
    assert status_of(rival.job, job.id) == 404  # as for a job that does not exist
    assert status_of(rival.settle, job.id) == 404
    assert status_of(rival.job, "0" * 32) == 404
    assert world.market.job(job.id).decision is None  # nothing was settled
    colleague = client(world, "market-settler", ["settle"], tenant="market")  # another key of the same tenant
    assert colleague.settle(job.id).decision == "hold"


def test_a_throwaway_replay_key_can_neither_download_uploads_nor_pass_audits(world):
    provider = world.provider()
    jid = world.job(provider)
    run_reference_job(provider, jid, POLICY, world.tmp / "store", 8, DELAY)
    audit = world.market.training(jid)["audits"][0]
    assert audit["state"] == "ready"
    outsider = client(world, "outsider", ["replay"])
    throwaway = signatures.new_private_key()
    for key in (None, throwaway):  # unsigned, or signed by a validator the job does not name
        assert status_of(outsider.replay_materials, audit["audit_id"], key) == 404
        assert status_of(outsider.replay_state, audit["audit_id"], key) == 404
    # a pass signed over the right evidence by a key nobody registered
    materials = world.validator.replay_materials(audit["audit_id"], world.validator_key)
    start, end = materials["start"], materials["end"]
    result = {"outcome": "pass", "mode": "exact", "reason": "trust me"}
    fields = training.replay_fields(audit["audit_id"], jid, audit["start_step"], audit["end_step"], start["root"],
                                    end["root"], end["hash"], materials["upload_sha256"], result)
    forged = result | {"validator_key": signatures.public_key_bytes(throwaway).hex(),
                       "signature": signatures.sign(throwaway, signatures.replay_message(fields)).hex()}
    assert status_of(outsider.post_replay_result, audit["audit_id"], forged) == 404
    assert status_of(world.validator.post_replay_result, audit["audit_id"], forged) == 404
    own_replay = client(world, "market-replay", ["replay"], tenant="market")
    assert status_of(own_replay.post_replay_result, audit["audit_id"], forged) == 403
    assert world.market.training(jid)["audits"][0]["state"] == "ready"
    # the named validator reads and judges; the tenant's own key reads without a validator signature
    assert own_replay.replay_state(audit["audit_id"]) == world.validator.replay_state(audit["audit_id"],
                                                                                     world.validator_key)
    judged = replay_job(world.validator, jid, world.validator_key)
    assert [a["outcome"] for a in judged] == ["pass", "pass"]


def test_validators_are_registered_listed_named_and_deleted_per_tenant(world):
    rival = client(world, "rival", ["jobs"])
    public = signatures.public_key_bytes(signatures.new_private_key()).hex()
    assert [v.public_key for v in world.market.validators()] == [
        signatures.public_key_bytes(world.validator_key).hex()]
    assert rival.validators() == []
    provider = world.provider()
    assert status_of(world.market.create_job, "r", provider.provider_id, "p", POLICY, None, None, [public]) == 422
    rival.register_validator(public, "rival's")
    job = rival.create_job("r", provider.provider_id, "p", POLICY)
    assert job.validators == [public]
    rival.delete_validator(public)
    assert rival.validators() == [] and status_of(rival.delete_validator, public) == 404


def test_private_references_stay_off_public_pages_and_log_entries(world):
    provider = world.provider()
    job = world.market.create_job(SECRET_RENTER, provider.provider_id, SECRET_PRICE)
    world.market.settle(job.id)
    pages = ["/", "/jobs", f"/providers/{provider.provider_id}", "/log", "/v1/log/entries",
             f"/v1/providers/{provider.provider_id}", "/v1/providers"]
    for path in pages:
        text = world.gw.client.get(path).text
        assert "SECRET" not in text, path
    bodies = [json.loads(e.entry) for e in world.market.log_entries().entries]
    settlement = [b for b in bodies if "SECRET" in json.dumps(b) or "renter_commitment" in json.dumps(b)]
    assert settlement and all("SECRET" not in json.dumps(b) for b in settlement)
    mine = world.market.job(job.id)  # the tenant can show a renter which entry is theirs
    expected = hashlib.sha256(bytes.fromhex(mine.renter_salt) + SECRET_RENTER.encode()).hexdigest()
    assert mine.renter_commitment == expected and expected in json.dumps(bodies)


def test_a_validators_signed_read_is_answered_once(world):
    """A validator's signed GET (its key, a timestamp and a nonce) used to be answerable again for the whole
    timestamp window: anyone who saw the request, with any `replay`-scoped key of any tenant, could replay
    it and download the job's evidence. Its nonce is now stored; a replay is refused 409."""
    from gpuproof.client import validator_headers

    provider = world.provider()
    jid = world.job(provider)
    run_reference_job(provider, jid, POLICY, world.tmp / "store", 8, DELAY)
    audit = world.market.training(jid)["audits"][0]
    db = world.gw.app.state.gp.db
    own = admin.create_api_key(db, "validator-read", ["replay"], "market")
    outsider = admin.create_api_key(db, "outsider", ["replay"])
    for path in (f"/v1/audits/{audit['audit_id']}/materials", f"/v1/audits/{audit['audit_id']}/state"):
        signed = validator_headers(world.validator_key, "GET", path, audience=world.gw.audience)
        first = world.gw.client.get(path, headers=signed | {"Authorization": f"Bearer {own}"})
        assert first.status_code == 200, first.text
        for token in (outsider, own):  # the same signed request again, with another tenant's key or its own
            again = world.gw.client.get(path, headers=signed | {"Authorization": f"Bearer {token}"})
            assert again.status_code == 409 and "already used" in again.json()["detail"], again.text
        fresh = validator_headers(world.validator_key, "GET", path, audience=world.gw.audience)  # a new nonce
        assert world.gw.client.get(path, headers=fresh | {"Authorization": f"Bearer {outsider}"}).status_code == 200
