"""The two clients: `GatewayClient` sends each call of gpuproof.client.calls with blocking httpx,
`AsyncGatewayClient` with asyncio. They differ only in `_drive`; the calls are the same table."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import httpx
from gpuproof.client.calls import Calls, Flow, GatewayError, GatewayUnreachable, Request, result
from gpuproof.verifier import wire

# Idle connections are dropped after 2 s, before uvicorn's 5 s keep-alive timeout closes them from the
# other end: reusing a connection the server is closing is a reset a client would otherwise see.
_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=2.0)


def _timeout(req: Request, default_s: float, patience: float) -> dict[str, Any]:
    """httpx's timeout for `req`: its own (a long poll) or the client's, times the calling thread's patience."""
    if req.timeout_s is None and patience == 1.0:
        return {}
    return {"timeout": (default_s if req.timeout_s is None else req.timeout_s) * patience}


class _Exchange:
    """One call being run: hands it each answer (or the `GatewayError` the answer was, which the call may
    catch) and gives its next request, until it returns its result (`value`)."""

    def __init__(self, flow: Flow[Any]) -> None:
        self.flow = flow
        self.reply: Any = None
        self.error: GatewayError | None = None
        self.value: Any = None

    def next_request(self) -> Request | None:
        try:
            req = self.flow.throw(self.error) if self.error is not None else self.flow.send(self.reply)
        except StopIteration as stop:
            self.value = stop.value
            return None
        self.reply, self.error = None, None
        return req

    def answer(self, req: Request, response: httpx.Response) -> None:
        try:
            self.reply = response if req.raw else result(response, req.model)
        except GatewayError as exc:
            self.error = exc


class GatewayClient(Calls):
    """Synchronous client. `key` (an Ed25519 key) makes it a provider; `api_key` a marketplace."""

    def __init__(self, base_url: str, api_key: str | None = None, *, timeout: float = 30.0,
                 transport: httpx.BaseTransport | None = None, **kwargs: Any) -> None:
        super().__init__(base_url, api_key, **kwargs)
        self.timeout_s = timeout
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport, limits=_LIMITS)
        self._patience = threading.local()

    def close(self) -> None:
        self._http.close()

    @contextlib.contextmanager
    def patience(self, factor: float) -> Iterator[None]:
        """The requests this thread sends inside wait `factor` times the usual timeout for the gateway: a
        retry after a timeout (under packet loss TCP's own retransmissions need longer than the first try
        allowed, and a retry with the same timeout fails the same way)."""
        before = getattr(self._patience, "factor", 1.0)
        self._patience.factor = factor
        try:
            yield
        finally:
            self._patience.factor = before

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, req: Request) -> httpx.Response:
        try:
            if self.needs_audience(req) and self.audience is None:
                self.accept_identity(result(self._http.get("/v1/identity"), wire.IdentityOut))
            return self._http.request(req.method, req.path, content=req.body, headers=self._headers(req),
                                      **_timeout(req, self.timeout_s, getattr(self._patience, "factor", 1.0)))
        except httpx.TransportError as exc:
            raise GatewayUnreachable(self.base_url, f"{type(exc).__name__}: {exc}",
                                     isinstance(exc, httpx.TimeoutException)) from None

    def _drive(self, flow: Flow[Any]) -> Any:
        run = _Exchange(flow)
        while (req := run.next_request()) is not None:
            try:
                run.answer(req, self._send(req))
            except GatewayUnreachable as exc:
                run.error = exc
        return run.value


class AsyncGatewayClient(Calls):
    """Asynchronous client with the same calls; each returns an awaitable."""

    def __init__(self, base_url: str, api_key: str | None = None, *, timeout: float = 30.0,
                 transport: httpx.AsyncBaseTransport | None = None, **kwargs: Any) -> None:
        super().__init__(base_url, api_key, **kwargs)
        self.timeout_s = timeout
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout, transport=transport, limits=_LIMITS)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncGatewayClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _send(self, req: Request) -> httpx.Response:
        try:
            if self.needs_audience(req) and self.audience is None:
                self.accept_identity(result(await self._http.get("/v1/identity"), wire.IdentityOut))
            return await self._http.request(req.method, req.path, content=req.body, headers=self._headers(req),
                                            **_timeout(req, self.timeout_s, 1.0))
        except httpx.TransportError as exc:
            raise GatewayUnreachable(self.base_url, f"{type(exc).__name__}: {exc}",
                                     isinstance(exc, httpx.TimeoutException)) from None

    async def _drive(self, flow: Flow[Any]) -> Any:
        run = _Exchange(flow)
        while (req := run.next_request()) is not None:
            try:
                run.answer(req, await self._send(req))
            except GatewayUnreachable as exc:
                run.error = exc
        return run.value
