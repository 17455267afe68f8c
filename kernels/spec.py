"""Challenge specifications gpuproof/1 and gpuproof/2 (docs/protocol.md, "Spec v1", "Spec v2"): parameters
and seed derivation.

A challenge names its spec (`ChallengeParams.spec`, the wire form's "spec"). v1 draws nibbles in [-8, 7];
v2 draws full-range int8 in [-128, 127] (so INT4 tensor cores cannot do its products at the int4 rate) and
bounds k so that every int32 sum of products stays exact. v1 stays verifiable forever: old transcripts and
tests/vectors/spec_v1.json reproduce byte for byte. Everything here is pure and tiny; the heavy lifting
lives in `gpuproof.kernels.reference` (NumPy, normative) and `gpuproof.kernels.cuda_backend` (CuPy). Both
derive keys with these functions so they cannot drift apart.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from gpuproof.kernels.errors import InvalidParameter

SPEC_V1 = "gpuproof/1"
SPEC_V2 = "gpuproof/2"
SPEC = SPEC_V2
"""The spec of new challenges (the verifier's issue, `gpuproof challenge local`, the CLI's default)."""
CHUNK_BYTES = 1024
"""Leaves of a round's Merkle tree are 1 KiB chunks of C_r (256 int32 values)."""
VALUES_PER_CHUNK = CHUNK_BYTES // 4
ZERO_ROOT = bytes(32)
_INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class SpecDefinition:
    """What differs between challenge specs: the domain strings, the value stream and the bound on k.

    `low..high` is the range of the int8 values; `values_per_block` how many one Philox4x64 block (4 raw
    words, 32 bytes) gives (v1: two nibbles per byte; v2: one byte per value); `max_k` the largest k the
    spec allows (a multiple of 64 with `max_abs_product * k` <= 2**31 - 1: every partial sum of a row of
    C_r is an exact int32 whatever the summation order).
    """

    name: str
    b_domain: bytes
    round_domain: bytes
    low: int
    high: int
    values_per_block: int
    max_k: int

    @property
    def version(self) -> int:
        return int(self.name.rsplit("/", 1)[1])

    @property
    def max_abs_product(self) -> int:
        """The largest |a * b| of two values: 64 in v1 ((-8)**2), 2**14 in v2 ((-128)**2)."""
        return max(self.low * self.low, self.high * self.high)


V1 = SpecDefinition(SPEC_V1, b"gpuproof.B.v1", b"gpuproof.round.v1", -8, 7, 64, 2**20)
# v2: 2**14 * k <= 2**31 - 1 gives k <= 131071; with k % 64 == 0 the largest k is 131008.
V2 = SpecDefinition(SPEC_V2, b"gpuproof.B.v2", b"gpuproof.round.v2", -128, 127, 32, 131008)
SPECS: dict[str, SpecDefinition] = {V1.name: V1, V2.name: V2}
MAX_K = V1.max_k
"""The largest k of any spec (v1's); `definition(spec).max_k` is a spec's own."""
assert all(d.max_abs_product * d.max_k <= _INT32_MAX and d.max_k % 64 == 0 for d in SPECS.values())
assert V2.max_abs_product * (V2.max_k + 64) > _INT32_MAX


def definition(spec: str) -> SpecDefinition:
    """The definition of a spec named as on the wire ("gpuproof/1", "gpuproof/2")."""
    found = SPECS.get(spec) if isinstance(spec, str) else None
    if found is None:
        raise InvalidParameter("--spec", f"expected one of {', '.join(SPECS)}, got {spec!r}")
    return found


def parse_spec(text: str | int, param: str = "--spec") -> str:
    """A spec given as its name ("gpuproof/2") or its version number (2, "2"): the name."""
    name = f"gpuproof/{text}" if isinstance(text, int) or str(text).isdigit() else str(text)
    if name not in SPECS:
        raise InvalidParameter(param, f"expected one of {', '.join(SPECS)} (or 1, 2), got {text!r}")
    return name


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

    Constraints: 32-byte seed; ``n`` = 256 * 2**p; ``k % 64 == 0``; ``k <= 2**20`` (v1) or ``k <= 131008``
    (v2); all positive. `spec` names the challenge's spec; it defaults to v1, the spec of every challenge
    made before v2 (vectors, transcripts, rows stored without one): new challenges name v2 explicitly.
    """

    seed: bytes
    m: int
    n: int
    k: int
    rounds: int
    spec: str = SPEC_V1

    def __post_init__(self) -> None:
        spec = definition(self.spec)
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
        if self.k > spec.max_k:
            raise InvalidParameter("--k", f"must be at most {spec.max_k} in {spec.name}, got {self.k}")

    @property
    def definition(self) -> SpecDefinition:
        return definition(self.spec)

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
        return {"spec": self.spec, "seed": self.seed.hex(), "m": self.m, "n": self.n, "k": self.k,
                "rounds": self.rounds}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], name: str = "challenge") -> ChallengeParams:
        """The parameters of a challenge's wire form (`to_dict`, or a challenge the gateway sent: other
        fields are ignored), every field checked; a form without "spec" is v1 (gateways before v2 sent
        none), a spec this code does not know is refused, never guessed at. InvalidParameter names the
        field (`name`.seed, ...)."""
        if not isinstance(data, Mapping):
            raise InvalidParameter(name, "expected an object")
        spec = data.get("spec", SPEC_V1)
        if spec not in SPECS:
            raise InvalidParameter(f"{name}.spec", f"expected one of {', '.join(SPECS)}, got {spec!r}")
        for key in ("seed", "m", "n", "k", "rounds"):
            if key not in data:
                raise InvalidParameter(name, f"missing field {key!r}")
        seed = data["seed"]
        if not isinstance(seed, str):
            raise InvalidParameter(f"{name}.seed", f"expected 64 hex characters, got {type(seed).__name__}")
        return cls(parse_seed(seed, f"{name}.seed"), data["m"], data["n"], data["k"], data["rounds"], spec)

    def with_rounds(self, rounds: int) -> ChallengeParams:
        """The same challenge cut (or extended) to `rounds` rounds: its first rounds are this one's."""
        return replace(self, rounds=rounds)


def key_words(key16: bytes) -> tuple[int, int]:
    """The Philox4x64 key of a 16-byte key: two little-endian uint64 words (spec v1 step 1)."""
    if len(key16) != 16:
        raise InvalidParameter("key", f"expected 16 bytes, got {len(key16)}")
    lo, hi = struct.unpack("<QQ", key16)
    return lo, hi


def b_key(seed: bytes, spec: str = SPEC_V1) -> bytes:
    """Key of the matrix B: first 16 bytes of SHA-256(b"gpuproof.B.v1" || seed) (spec v1 step 2), with
    b"gpuproof.B.v2" in v2."""
    return hashlib.sha256(definition(spec).b_domain + seed).digest()[:16]


def round_seed(seed: bytes, round_index: int, prev_root: bytes, spec: str = SPEC_V1) -> bytes:
    """rs_r = SHA-256(b"gpuproof.round.v1" || seed || u32le(r) || prev_root) (spec v1 step 3), with
    b"gpuproof.round.v2" in v2.

    `prev_root` is 32 zero bytes for round 0, else the committed root of round r-1: this chains the
    rounds, so round r cannot start before round r-1 is finished.
    """
    if len(prev_root) != 32:
        raise InvalidParameter("prev_root", f"expected 32 bytes, got {len(prev_root)}")
    domain = definition(spec).round_domain
    return hashlib.sha256(domain + seed + struct.pack("<I", round_index) + prev_root).digest()


def a_key(seed: bytes, round_index: int, prev_root: bytes, spec: str = SPEC_V1) -> bytes:
    """Key of A_r: the first 16 bytes of rs_r."""
    return round_seed(seed, round_index, prev_root, spec)[:16]


def prev_root_of(roots: list[bytes] | tuple[bytes, ...], round_index: int) -> bytes:
    """The root that round `round_index` chains on: zero for round 0, else roots[round_index - 1]."""
    return ZERO_ROOT if round_index == 0 else roots[round_index - 1]
