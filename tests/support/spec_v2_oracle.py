"""Spec gpuproof/2 written from scratch from docs/protocol.md ("Spec v2"), sharing no code with gpuproof.

It is the independent implementation tests/vectors/spec_v2.json was made with: Philox4x64-10 in pure
Python from its definition (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011; the
Random123 constants), SHA-256 from hashlib, the product in NumPy int64 (exact here: |entries| < 2**31),
and the RFC 6962 tree hash as RFC 6962 section 2.1 defines it. Nothing is imported from gpuproof, so a
mistake in the reference or the kernels cannot repeat itself here.

    python -m tests.support.spec_v2_oracle > tests/vectors/spec_v2.json
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys

import numpy as np

MASK64 = (1 << 64) - 1
PHILOX_M = (0xD2E7470EE14C6C93, 0xCA5A826395121157)
PHILOX_W = (0x9E3779B97F4A7C15, 0xBB67AE8584CAA73B)


def philox4x64_10(counter: tuple[int, int, int, int], key: tuple[int, int]) -> list[int]:
    """One Philox4x64 block of 10 rounds: S-box by two 64x64->128 multiplies, the key bumped by the Weyl
    constants after each round."""
    x0, x1, x2, x3 = counter
    k0, k1 = key
    for _ in range(10):
        p0, p1 = PHILOX_M[0] * x0, PHILOX_M[1] * x2
        hi0, lo0, hi1, lo1 = p0 >> 64, p0 & MASK64, p1 >> 64, p1 & MASK64
        x0, x1, x2, x3 = hi1 ^ x1 ^ k0, lo1, hi0 ^ x3 ^ k1, lo0
        k0, k1 = (k0 + PHILOX_W[0]) & MASK64, (k1 + PHILOX_W[1]) & MASK64
    return [x0, x1, x2, x3]


def raw_words(key16: bytes, first_block: int, blocks: int) -> list[int]:
    """The stream's raw words: block b is the cipher of the 256-bit counter b + 1 (as NumPy's Philox,
    which increments its counter before it enciphers), the key the two little-endian words of key16."""
    key = struct.unpack("<QQ", key16)
    out: list[int] = []
    for b in range(first_block, first_block + blocks):
        c = b + 1
        out += philox4x64_10((c & MASK64, (c >> 64) & MASK64, (c >> 128) & MASK64, c >> 192), key)
    return out


def values(key16: bytes, rows: int, k: int) -> np.ndarray:
    """The rows x k matrix of the v2 byte stream: each little-endian byte of each raw word, in order, one
    value, read as a two's-complement int8."""
    count = rows * k
    words = raw_words(key16, 0, count // 32)
    data = b"".join(struct.pack("<Q", w) for w in words)
    return np.array([byte - 256 if byte >= 128 else byte for byte in data], dtype=np.int64).reshape(rows, k)


def rfc6962_root(leaves: list[bytes]) -> bytes:
    """MTH(D[n]): SHA-256(0x00 || d) for one leaf; else split at the largest power of two below n and hash
    SHA-256(0x01 || MTH(left) || MTH(right))."""
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    split = 1
    while split * 2 < len(leaves):
        split *= 2
    return hashlib.sha256(b"\x01" + rfc6962_root(leaves[:split]) + rfc6962_root(leaves[split:])).digest()


def b_key(seed: bytes) -> bytes:
    return hashlib.sha256(b"gpuproof.B.v2" + seed).digest()[:16]


def a_key(seed: bytes, r: int, prev_root: bytes) -> bytes:
    return hashlib.sha256(b"gpuproof.round.v2" + seed + struct.pack("<I", r) + prev_root).digest()[:16]


def roots(seed: bytes, m: int, n: int, k: int, rounds: int) -> list[bytes]:
    """The commitment of a v2 challenge: R roots, round r keyed by the root of round r - 1."""
    b = values(b_key(seed), n, k)
    out: list[bytes] = []
    prev = bytes(32)
    for r in range(rounds):
        c = values(a_key(seed, r, prev), m, k) @ b.T
        assert np.abs(c).max() < 2**31
        data = c.astype("<i4").tobytes()
        prev = rfc6962_root([data[i:i + 1024] for i in range(0, len(data), 1024)])
        out.append(prev)
    return out


CASES = [
    {"desc": "W1", "seed": bytes(32).hex(), "m": 256, "n": 256, "k": 64, "rounds": 2},
    {"desc": "W2", "seed": hashlib.sha256(b"gpuproof test vector 2").hexdigest(),
     "seed_is_sha256_of": "gpuproof test vector 2", "m": 100, "n": 512, "k": 192, "rounds": 3},
    {"desc": "W3", "seed": hashlib.sha256(b"gpuproof test vector 3").hexdigest(),
     "seed_is_sha256_of": "gpuproof test vector 3", "m": 17, "n": 1024, "k": 1088, "rounds": 2},
]


def case(spec: dict) -> dict:
    """A vector: the inputs, B's key words and first values, A_0's key words, C_0[0, :4], the roots."""
    seed = bytes.fromhex(spec["seed"])
    b0 = values(b_key(seed), 1, spec["k"])[0]
    a0 = values(a_key(seed, 0, bytes(32)), 1, spec["k"])[0]
    c00 = values(b_key(seed), 4, spec["k"]) @ a0
    return {**spec, "spec": "gpuproof/2",
            "b_key_words": [f"{w:016x}" for w in struct.unpack("<QQ", b_key(seed))],
            "b_row0_first8": [int(v) for v in b0[:8]],
            "a0_key_words": [f"{w:016x}" for w in struct.unpack("<QQ", a_key(seed, 0, bytes(32)))],
            "c0_row0_first4": [int(v) for v in c00],
            "roots": [r.hex() for r in roots(seed, spec["m"], spec["n"], spec["k"], spec["rounds"])]}


def document() -> dict:
    key = struct.pack("<QQ", 1, 2)
    words = raw_words(key, 0, 1)[:3]
    first = values(key, 1, 64)[0]
    return {
        "source": "issue 17 (spec v2 vectors), normative; made by tests/support/spec_v2_oracle.py, an "
                  "implementation written from docs/protocol.md that shares no code with gpuproof",
        "spec": "gpuproof/2",
        "max_k": 131008,
        "philox": [{"key_words": [1, 2], "first_raw_words": [f"{w:016x}" for w in words],
                    "first_values16": [int(v) for v in first[:16]]}],
        "challenges": [case(c) for c in CASES],
    }


if __name__ == "__main__":
    json.dump(document(), sys.stdout, indent=1)
    sys.stdout.write("\n")
