"""The one error tree of gpuproof.

Every error says what was expected and what came, so a provider, a renter or a marketplace can act on it
without reading code. The CLI maps any `GpuproofError` to one line and exit code 1 (2 for bad parameters);
the gateway maps them to RFC 9457 problem+json.
"""

from __future__ import annotations


class GpuproofError(Exception):
    """Base class of every error gpuproof raises on purpose."""


class InvalidParameter(GpuproofError, ValueError):
    """A parameter is outside what the spec allows; `param` names it as the user typed it."""

    def __init__(self, param: str, detail: str) -> None:
        super().__init__(f"{param}: {detail}")
        self.param = param
        self.detail = detail


class ProofError(GpuproofError):
    """A Merkle proof does not check out; the message says which part is wrong."""


class OpeningRejected(GpuproofError):
    """An opened row fails verification.

    `reason` is a stable machine-readable code (``bad-length``, ``bad-path``, ``wrong-value``,
    ``bad-round``, ``bad-row``); the message is the human sentence.
    """

    def __init__(self, reason: str, detail: str, *, column: int | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.column = column


class BackendUnavailable(GpuproofError):
    """The requested compute backend cannot run here (no CuPy, no GPU, bad device index)."""


class ExtraMissing(GpuproofError):
    """A command needs an optional part of gpuproof that is not installed here (the gateway's server on a
    provider's box); the message names the extra and the command that installs it."""
