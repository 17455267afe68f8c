"""Ids and hex on the wire: the one validator every edge uses (the gateway's schemas and headers, the
verifier's objects, the CLI's arguments). Bytes cross the wire as lowercase hex; ids are 16 random bytes."""

from __future__ import annotations

import re

from gpuproof.kernels.errors import InvalidParameter

ID_BYTES = 16  # challenge, provider, job and audit ids: 16 random bytes, 32 lowercase hex characters


def hex_digits(nbytes: int) -> str:
    """The regular expression of `nbytes` bytes as lowercase hex, unanchored, for a larger pattern to embed
    (a URL path with an id in it); `hex_pattern` is the same, anchored."""
    return rf"[0-9a-f]{{{2 * nbytes}}}"


def hex_pattern(nbytes: int) -> str:
    """The regular expression of `nbytes` bytes as lowercase hex (ids are 16 bytes: 32 characters)."""
    return f"^{hex_digits(nbytes)}$"


_PATTERNS: dict[int, re.Pattern[str]] = {}


def is_hex(text: object, nbytes: int) -> bool:
    """Whether `text` is exactly `nbytes` bytes as lowercase hex."""
    pattern = _PATTERNS.get(nbytes) or _PATTERNS.setdefault(nbytes, re.compile(hex_pattern(nbytes)))
    return isinstance(text, str) and pattern.fullmatch(text) is not None


def check_id(text: object, param: str) -> str:
    """`text` if it is an id (32 lowercase hex characters), else InvalidParameter naming `param`."""
    if not is_hex(text, ID_BYTES):
        raise InvalidParameter(param, "expected 32 lowercase hex characters")
    assert isinstance(text, str)
    return text
