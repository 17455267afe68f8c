"""Reliability tests reuse the gateway fixtures."""

from tests.gateway.conftest import gateway  # noqa: F401
