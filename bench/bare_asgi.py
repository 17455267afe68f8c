"""The server's own limit: a bare ASGI app (no framework) answering every request with one fixed JSON body.

bench/gateway_bench.py serves it with the gateway's uvicorn settings and measures it with the same wrk
parameters as the gateway's reads, in the same run, so that each gateway figure is read as a ratio to
what uvicorn alone manages on that machine at that moment. The body is BARE_ASGI_BYTES long (the
bench sets it to the length of the trust answer it measures), sent with the headers the gateway's
trust read sends (content-type and content-length; uvicorn adds date and server to both).
"""

from __future__ import annotations

import os


def fixed_body(size: int) -> bytes:
    """A JSON object of exactly `size` bytes (at least 14)."""
    head, tail = b'{"padding":"', b'"}'
    if size < len(head) + len(tail):
        raise ValueError(f"a fixed JSON body needs at least {len(head) + len(tail)} bytes, got {size}")
    return head + b"x" * (size - len(head) - len(tail)) + tail


BODY = fixed_body(int(os.environ.get("BARE_ASGI_BYTES", "300")))
START = {"type": "http.response.start", "status": 200,
         "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]}
RESPONSE = {"type": "http.response.body", "body": BODY}


async def app(scope, receive, send) -> None:  # noqa: ANN001 - the ASGI triple
    """Answer every HTTP request with BODY; accept lifespan's start and stop."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send(START)
    await send(RESPONSE)
