"""The gateway's SDK (httpx, sync and async) and the signing helpers agents use.

`GatewayClient` and `AsyncGatewayClient` run the same table of calls (`gpuproof.client.calls`); they differ
only in how they send. Errors come back as `GatewayError` carrying the problem+json detail; an unreachable
gateway is `GatewayUnreachable`. What can be checked locally is checked by gpuproof.verifier.logproofs: the
signed tree head's signature (`tree_head`), inclusion proofs (`verified_entry`) and consistency proofs
(`check_extends`), all raising `LogVerificationError` with the reason.

The SDK needs none of the server's dependencies: a provider box or a marketplace installs it without FastAPI
or SQLAlchemy (tests/test_packages.py).
"""

from gpuproof.client.calls import GatewayError, GatewayUnreachable, Poll
from gpuproof.client.http import AsyncGatewayClient, GatewayClient
from gpuproof.client.signing import registration, signed_headers, signed_upload_headers, validator_headers
from gpuproof.verifier.logproofs import LogVerificationError, TreeHead

__all__ = ["AsyncGatewayClient", "GatewayClient", "GatewayError", "GatewayUnreachable", "LogVerificationError",
           "Poll", "TreeHead", "registration", "signed_headers", "signed_upload_headers", "validator_headers"]
