"""Challenge specification gpuproof/1 (docs/protocol.md, "Spec v1"): parameters and seed derivation.

Everything here is pure and tiny; the heavy lifting lives in `gpuproof.kernels.reference` (NumPy, normative) and
`gpuproof.kernels.cuda_backend` (CuPy). Both derive keys with these functions so they cannot drift apart.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gpuproof.kernels.errors import InvalidParameter

SPEC = "gpuproof/1"
CHUNK_BYTES = 1024
"""Leaves of a round's Merkle tree are 1 KiB chunks of C_r (256 int32 values)."""
VALUES_PER_CHUNK = CHUNK_BYTES // 4
MAX_K = 2**20
ZERO_ROOT = bytes(32)

_B_DOMAIN = b"gpuproof.B.v1"
_ROUND_DOMAIN = b"gpuproof.round.v1"


def parse_seed(text: str, param: str = "--seed") -> bytes:
    """Parse a seed given as 64 hex characters (an optional ``0x`` prefix is accepted)."""
    raw = text.strip()
    if raw[:2].lower() == "0x":
        raw = raw[2:]
    if len(raw) != 64:
        raise InvalidParameter(param, f"expected 64 hex characters (32 bytes), got {len(raw)}")
    try:
        return bytes.fromhex(raw)
    except ValueError:
        raise InvalidParameter(param, "expected 64 hex characters, found a non-hex character") from None


def _is_pow2(x: int) -> bool:
    return x > 0 and x & (x - 1) == 0


@dataclass(frozen=True)
class ChallengeParams:
    """The public parameters of one challenge; an instance is always valid (checked on construction).

    Spec v1 constraints: 32-byte seed; ``n`` = 256 * 2**p; ``k % 64 == 0``; ``k <= 2**20``; all positive.
    """

    seed: bytes
    m: int
    n: int
    k: int
    rounds: int

    def __post_init__(self) -> None:
        if not isinstance(self.seed, bytes) or len(self.seed) != 32:
            got = len(self.seed) if isinstance(self.seed, bytes | bytearray) else type(self.seed).__name__
            raise InvalidParameter("--seed", f"expected 32 bytes, got {got}")
        for name in ("m", "n", "k", "rounds"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise InvalidParameter(f"--{name}", f"expected an integer, got {type(value).__name__}")
            if value <= 0:
                raise InvalidParameter(f"--{name}", f"must be positive, got {value}")
        if self.n % VALUES_PER_CHUNK or not _is_pow2(self.n // VALUES_PER_CHUNK):
            raise InvalidParameter("--n", f"must be 256 times a power of two (256, 512, 1024, ...), got {self.n}")
        if self.k % 64:
            raise InvalidParameter("--k", f"must be a multiple of 64, got {self.k}")
        if self.k > MAX_K:
            raise InvalidParameter("--k", f"must be at most {MAX_K}, got {self.k}")

    @property
    def chunks_per_row(self) -> int:
        """Leaves per row of C_r: a power of two, so each row is one complete Merkle subtree."""
        return self.n // VALUES_PER_CHUNK

    @property
    def leaves_per_round(self) -> int:
        return self.m * self.chunks_per_row

    @property
    def operations_per_round(self) -> int:
        """Integer operations of one round's matmul, counting multiply and add (2*m*n*k)."""
        return 2 * self.m * self.n * self.k

    @property
    def operations(self) -> float:
        """W = 2*m*n*k*R: the integer operations of the whole challenge, the work every rate and threshold
        is computed from (docs/protocol.md, "Timing"); a float, as every rate is."""
        return float(self.operations_per_round * self.rounds)

    def to_dict(self) -> dict[str, object]:
        """The wire form: the spec, the seed as hex and the sizes."""
        return {"spec": SPEC, "seed": self.seed.hex(), "m": self.m, "n": self.n, "k": self.k,
                "rounds": self.rounds}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], name: str = "challenge") -> ChallengeParams:
        """The parameters of a challenge's wire form (`to_dict`, or a challenge the gateway sent: other
        fields are ignored), every field checked; a `spec` other than gpuproof/1 is refused, never guessed
        at. InvalidParameter names the field (`name`.seed, ...)."""
        if not isinstance(data, Mapping):
            raise InvalidParameter(name, "expected an object")
        if data.get("spec", SPEC) != SPEC:
            raise InvalidParameter(f"{name}.spec", f"expected {SPEC!r}, got {data.get('spec')!r}")
        for key in ("seed", "m", "n", "k", "rounds"):
            if key not in data:
                raise InvalidParameter(name, f"missing field {key!r}")
        seed = data["seed"]
        if not isinstance(seed, str):
            raise InvalidParameter(f"{name}.seed", f"expected 64 hex characters, got {type(seed).__name__}")
        return cls(parse_seed(seed, f"{name}.seed"), data["m"], data["n"], data["k"], data["rounds"])


def key_words(key16: bytes) -> tuple[int, int]:
    """The Philox4x64 key of a 16-byte key: two little-endian uint64 words (spec v1 step 1)."""
    if len(key16) != 16:
        raise InvalidParameter("key", f"expected 16 bytes, got {len(key16)}")
    lo, hi = struct.unpack("<QQ", key16)
    return lo, hi


def b_key(seed: bytes) -> bytes:
    """Key of the matrix B: first 16 bytes of SHA-256(b"gpuproof.B.v1" || seed) (spec v1 step 2)."""
    return hashlib.sha256(_B_DOMAIN + seed).digest()[:16]


def round_seed(seed: bytes, round_index: int, prev_root: bytes) -> bytes:
    """rs_r = SHA-256(b"gpuproof.round.v1" || seed || u32le(r) || prev_root) (spec v1 step 3).

    `prev_root` is 32 zero bytes for round 0, else the committed root of round r-1: this chains the
    rounds, so round r cannot start before round r-1 is finished.
    """
    if len(prev_root) != 32:
        raise InvalidParameter("prev_root", f"expected 32 bytes, got {len(prev_root)}")
    return hashlib.sha256(_ROUND_DOMAIN + seed + struct.pack("<I", round_index) + prev_root).digest()


def a_key(seed: bytes, round_index: int, prev_root: bytes) -> bytes:
    """Key of A_r: the first 16 bytes of rs_r."""
    return round_seed(seed, round_index, prev_root)[:16]


def prev_root_of(roots: list[bytes] | tuple[bytes, ...], round_index: int) -> bytes:
    """The root that round `round_index` chains on: zero for round 0, else roots[round_index - 1]."""
    return ZERO_ROOT if round_index == 0 else roots[round_index - 1]
