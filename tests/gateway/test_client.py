"""The SDK against a real gateway: typed errors, local verification of the log, tampering detected."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from gpuproof.client import (
    AsyncGatewayClient,
    GatewayClient,
    GatewayError,
    GatewayUnreachable,
    LogVerificationError,
    TreeHead,
)
from gpuproof.gateway import admin
from gpuproof.gateway.db import Database
from gpuproof.kernels.backend import Opening
from gpuproof.kernels.reference import CpuBackend
from gpuproof.verifier import signatures
from gpuproof.verifier.outcome import Outcome
from gpuproof.verifier.wire import ProviderPage, RttOut, VerdictOut

from tests.support.calibrate import honest_test_shape
from tests.support.server import Server


@pytest.fixture
def server(tmp_path):
    # an honest provider's challenges allow it 1 s (scaled to this machine) of HTTP beyond the overhead
    s = Server(f"sqlite:///{tmp_path / 'gw.db'}", tmp_path / "gw", GPUPROOF_CHALLENGE_INTERVAL_S="0",
               GPUPROOF_VERIFY_TEST_SHAPE=honest_test_shape(1)).start()
    s.db_url = f"sqlite:///{tmp_path / 'gw.db'}"
    yield s
    s.stop()


def play(client: GatewayClient) -> VerdictOut:
    c, probe, _ = client.next_challenge(0)
    assert c is not None and probe is not None
    assert isinstance(client.echo_rtt(probe), RttOut)
    params = c.params()
    roots = CpuBackend().run(params)
    req = client.commit(c.challenge_id, roots)
    openings = []
    for r, i in sorted(set(req.pairs)):
        values, path = CpuBackend().open(params, r, i, roots)
        openings.append(Opening(r, i, values, tuple(path)).to_json())
    return client.open(c.challenge_id, openings)


class Tamper(httpx.HTTPTransport):
    """Forwards to the real gateway, then rewrites one JSON response."""

    def __init__(self, path: str, edit) -> None:  # noqa: ANN001
        super().__init__()
        self.path, self.edit = path, edit

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if request.url.path != self.path:
            return response
        response.read()
        data = self.edit(json.loads(response.content))
        return httpx.Response(response.status_code, json=data)


def test_provider_and_marketplace_calls_and_a_verified_log(server):
    key = signatures.new_private_key()
    with GatewayClient(server.base, key=key) as provider:
        provider.register("sdk", [{"model": "cpu-reference", "vram_gib": 4}])
        head0 = provider.tree_head()
        verdicts = [play(provider) for _ in range(3)]
        assert all(v.outcome == Outcome.PASS for v in verdicts)
        head = provider.check_extends(head0)
        assert head.size == head0.size + 9  # each challenge: commitment, opening request, verdict
        for index in range(head.size):
            entry = provider.verified_entry(index, head)
            assert entry["kind"] in ("registration", "commitment", "opening-request", "verdict")
        audit = provider.audit_log(head)
        assert audit.differences == [] and audit.size == head.size
    token = admin.create_api_key(Database(server.db_url), "market", ["jobs", "settle"])
    with GatewayClient(server.base, api_key=token) as market:
        pid = provider.provider_id
        job = market.create_job("renter-7", pid, "usd:3")
        assert market.settle(job.id).decision in ("hold", "release")
        assert market.trust(pid).evidence == 3
        with pytest.raises(GatewayError) as info:
            market.trust("0" * 32)
        assert info.value.status == 404 and "no provider" in info.value.detail


def test_async_client(server):
    async def main() -> tuple[ProviderPage, TreeHead]:
        async with AsyncGatewayClient(server.base) as client:
            providers = await client.providers(limit=5)
            head = await client.tree_head()
            return providers, await client.check_extends(head)

    providers, head = asyncio.run(main())
    assert providers.total == 0 and head.size == 0


@pytest.mark.parametrize("path, edit, fragment", [
    ("/v1/log/head", lambda d: dict(d, root="00" * 32), "its signed checkpoint"),
    ("/v1/log/head", lambda d: dict(d, size=d["size"] + 1), "its signed checkpoint"),
    ("/v1/log/head", lambda d: dict(d, size=d["size"] + 1, checkpoint=d["checkpoint"].replace(
        f"\n{d['size']}\n", f"\n{d['size'] + 1}\n", 1)), "checkpoint: the signature by .* does not verify"),
    ("/v1/log/head", lambda d: dict(d, origin="another/log", checkpoint=d["checkpoint"].replace(
        d["origin"], "another/log")), "checkpoint: the note has no signature by another/log"),
    # a head without its checkpoint is checked by its older signature, which covers size and root too
    ("/v1/log/head", lambda d: {k: v for k, v in d.items() if k != "checkpoint"} | {"size": d["size"] + 1},
     "tree head signature: signature does not verify"),
    ("/v1/log/consistency", lambda d: dict(d, proof=d["proof"][:-1]), "does not extend"),
    ("/v1/log/inclusion", lambda d: dict(d, proof=["00" * 32] + d["proof"][1:]), "not in the signed tree"),
    ("/v1/log/entries", lambda d: dict(d, entries=[dict(e, entry=e["entry"].replace("sdk", "evil"))
                                                   for e in d["entries"]]), "not in the signed tree"),
])
def test_tampered_log_responses_are_detected(server, path, edit, fragment):
    key = signatures.new_private_key()
    with GatewayClient(server.base, key=key) as honest:
        honest.register("sdk", [{"model": "cpu-reference", "vram_gib": 4}])
        old = honest.tree_head()
        play(honest)
        play(honest)
    with GatewayClient(server.base, transport=Tamper(path, edit)) as client, \
            pytest.raises(LogVerificationError, match=fragment):
        head = client.check_extends(old)
        client.verified_entry(0, head)


def test_pinned_key_and_unreachable(server):
    with GatewayClient(server.base, pinned_log_key=bytes(32)) as client, \
            pytest.raises(LogVerificationError, match="another key"):
        client.tree_head()
    with GatewayClient("http://127.0.0.1:9") as client, pytest.raises(GatewayUnreachable):
        client.trust("0" * 32)


def test_the_checkpoint_call_verifies_the_text_endpoint(server):
    with GatewayClient(server.base, key=signatures.new_private_key()) as provider:
        provider.register("sdk", [{"model": "cpu-reference", "vram_gib": 4}])
        head, checkpoint = provider.tree_head(), provider.checkpoint()
    assert (checkpoint.size, checkpoint.root, checkpoint.origin, checkpoint.checkpoint) == (
        head.size, head.root, head.origin, head.checkpoint) and head.size == 1
    stranger = signatures.public_key_bytes(signatures.new_private_key())
    with GatewayClient(server.base, pinned_log_key=stranger) as other, \
            pytest.raises(LogVerificationError, match="checkpoint: the note has no signature by"):
        other.checkpoint()
