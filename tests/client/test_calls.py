"""The SDK's one table of calls: the sync and async clients send the same requests and get the same results,
and a call may catch the error an answer was (no server: an httpx mock transport)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from gpuproof.client import AsyncGatewayClient, GatewayClient, GatewayError, Poll
from gpuproof.client.calls import Request, call
from gpuproof.verifier import signatures

KEY = signatures.new_private_key()


def answer(request: httpx.Request) -> httpx.Response:
    if request.url.path == "/missing":
        return httpx.Response(404, json={"title": "Not found", "detail": "no such thing"})
    if request.url.path.endswith("/challenges"):
        return httpx.Response(204, headers={"Retry-After": "7", "X-Gpuproof-Rtt-Probe": "p"})
    # calls that name a response model get an answer of that model (verifier/wire.py), the others an echo
    if request.url.path == "/v1/providers":
        return httpx.Response(200, json={"items": [], "total": 0, "limit": 5, "offset": 0})
    if request.url.path.endswith("/commitment"):
        return httpx.Response(200, json={"challenge_id": "1" * 32, "pairs": [[0, 3], [1, 2]]})
    if request.url.path == "/v1/identity":  # asked once, before the first signed request
        return httpx.Response(200, json={"audience": "gw", "public_key": "00" * 32, "signature_version": "2"})
    if request.url.path == "/v1/validators":
        return httpx.Response(200, json=[])
    return httpx.Response(200, json={"path": request.url.path, "query": request.url.query.decode()})


def caught_then_read(client):  # noqa: ANN001, ANN201 - a call written the way client/calls.py writes them
    try:
        yield Request("GET", "/missing")
    except GatewayError as exc:
        status = exc.status
    return status, (yield Request("GET", "/v1/log/head-like"))


class Sync(GatewayClient):
    caught_then_read = call(caught_then_read)


class Async(AsyncGatewayClient):
    caught_then_read = call(caught_then_read)


CALLS = [("providers", (), {"model": "H100", "limit": 5}), ("transcript", ("0" * 32,), {}),
         ("validators", (), {}), ("training", ("0" * 32,), {}), ("poll", (0, 2.0), {}),
         ("commit", ("1" * 32, [bytes(32)]), {}), ("caught_then_read", (), {})]


def run_both(name: str, args: tuple, kwargs: dict) -> tuple[list, list, object, object]:
    sent: dict[str, list] = {"sync": [], "async": []}

    def recorder(side: str):  # noqa: ANN202
        def handle(request: httpx.Request) -> httpx.Response:
            sent[side].append((request.method, str(request.url), request.content,
                               "authorization" in request.headers, "x-gpuproof-signature" in request.headers))
            return answer(request)
        return handle

    with Sync("http://gw", "gpk_a_b", key=KEY, transport=httpx.MockTransport(recorder("sync"))) as client:
        got_sync = getattr(client, name)(*args, **kwargs)

    async def main() -> object:
        async with Async("http://gw", "gpk_a_b", key=KEY, transport=httpx.MockTransport(recorder("async"))) as c:
            return await getattr(c, name)(*args, **kwargs)

    return sent["sync"], sent["async"], got_sync, asyncio.run(main())


@pytest.mark.parametrize("name, args, kwargs", CALLS, ids=[c[0] for c in CALLS])
def test_sync_and_async_send_the_same_requests_and_return_the_same(name, args, kwargs):
    sent_sync, sent_async, got_sync, got_async = run_both(name, args, kwargs)
    assert sent_sync == sent_async and sent_sync
    assert got_sync == got_async


def test_what_the_calls_send():
    sent, _, poll, _ = run_both("poll", (0, 2.0), {})
    assert sent == [("GET", "http://gw/v1/identity", b"", False, False),  # the audience, before the first signature
                    ("POST", "http://gw/v1/providers/" + GatewayClient("http://gw", key=KEY).provider_id
                     + "/challenges", json.dumps({"device": 0, "wait_s": 2.0}).encode(), False, True)]
    assert poll == Poll(None, "p", 7.0, None)
    sent, _, status_and_body, _ = run_both("caught_then_read", (), {})
    assert [s[1] for s in sent] == ["http://gw/missing", "http://gw/v1/log/head-like"]
    assert status_and_body == (404, {"path": "/v1/log/head-like", "query": ""})
    sent, _, _, _ = run_both("validators", (), {})
    assert sent[0][3] and not sent[0][4]  # an API key's call: Bearer, unsigned
    _, _, request, _ = run_both("commit", ("1" * 32, [bytes(32)]), {})
    assert request.pairs == [(0, 3), (1, 2)]  # parsed into its model (OpeningRequestOut)


def test_an_answer_that_is_not_its_model_is_a_502_gateway_error():
    """The gateway broke its contract: the SDK says so instead of handing back a wrong shape."""
    wrong = httpx.MockTransport(lambda request: httpx.Response(200, json={"items": "not a list"}))
    with GatewayClient("http://gw", transport=wrong) as client, \
            pytest.raises(GatewayError, match="ProviderPage") as info:
        client.providers()
    assert info.value.status == 502


def test_an_uncaught_error_reaches_the_caller_from_both_clients():
    gone = httpx.MockTransport(lambda request: httpx.Response(404, json={"detail": "no such thing"}))
    with GatewayClient("http://gw", transport=gone) as client, pytest.raises(GatewayError, match="no such thing"):
        client.provider("0" * 32)

    async def main() -> None:
        async with AsyncGatewayClient("http://gw", transport=gone) as client:
            await client.provider("0" * 32)

    with pytest.raises(GatewayError, match="no such thing"):
        asyncio.run(main())


def test_all_providers_follows_the_cursors_to_the_last_page_in_both_clients():
    """Three pages chained by next_cursor: every provider once, and each cursor sent back as it came."""
    ids = [f"{i:032x}" for i in range(5)]
    sent: list[str | None] = []

    def pages(request: httpx.Request) -> httpx.Response:
        cursor = request.url.params.get("cursor")
        sent.append(cursor)
        start = 0 if cursor is None else int(cursor[1:])
        items = [{"id": pid, "name": "p", "public_key": "00" * 32, "created_at": 1.0, "devices": []}
                 for pid in ids[start:start + 2]]
        more = start + 2 < len(ids)
        return httpx.Response(200, json={"items": items, "total": len(ids), "limit": 2, "offset": 0,
                                         "next_cursor": f"c{start + 2}" if more else None})

    with GatewayClient("http://gw", transport=httpx.MockTransport(pages)) as client:
        assert [p.id for p in client.all_providers(page=2)] == ids

    async def main() -> list[str]:
        async with AsyncGatewayClient("http://gw", transport=httpx.MockTransport(pages)) as client:
            return [p.id for p in await client.all_providers(page=2)]

    assert asyncio.run(main()) == ids
    assert sent == [None, "c2", "c4"] * 2
