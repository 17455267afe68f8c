"""A checkpoint verifier written from the C2SP signed-note and tlog-checkpoint specifications alone, sharing
no code with gpuproof.verifier.notes, in Python and (checkpoint_verify.mjs) in JavaScript: the tests' second and
third opinions on what the gateway signs."""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def spec_verify(note: str, name: str, public_key: bytes) -> tuple[str, int, bytes]:
    """The checkpoint's (origin, size, root), verified as C2SP signed-note and tlog-checkpoint say, from the
    specifications alone: the text is everything up to and including the newline before the last blank line;
    a signature line is U+2014, space, key name, space, base64(4-byte key ID || signature); key ID =
    SHA-256(name || 0x0A || 0x01 || public key)[:4]; the signature is Ed25519 over the text's bytes."""
    raw = note.encode("utf-8")
    cut = raw.rindex(b"\n\n")
    text, lines = raw[:cut + 1], raw[cut + 2:]
    want_id = hashlib.sha256(name.encode() + b"\x0a\x01" + public_key).digest()[:4]
    verified = False
    for line in lines.split(b"\n")[:-1]:
        dash, key_name, b64 = line.decode().split(" ")
        assert dash == "\u2014"
        blob = base64.b64decode(b64, validate=True)
        if key_name == name and blob[:4] == want_id:
            Ed25519PublicKey.from_public_bytes(public_key).verify(blob[4:], text)  # raises InvalidSignature
            verified = True
    assert verified, "no signature by the key"
    origin, size, root = text.decode().split("\n")[:3]
    assert size == str(int(size))
    return origin, int(size), base64.b64decode(root, validate=True)


def node_verify(verifier_key: str, note: str) -> subprocess.CompletedProcess[str] | None:
    """The checkpoint checked by tests/support/checkpoint_verify.mjs, a verifier in JavaScript on Node's own
    Ed25519 (None where Node is not installed): its JSON line on stdout, its reason on stderr."""
    node = shutil.which("node")
    if node is None:
        return None
    return subprocess.run([node, str(Path(__file__).with_name("checkpoint_verify.mjs")), verifier_key], input=note,
                          capture_output=True, text=True, timeout=60)
