"""Signed notes and log checkpoints (C2SP signed-note, tlog-checkpoint): byte-for-byte agreement with Go's
published vectors (tests/vectors/signed_note.json), a verifier written here from the specification that
shares no code with gpuproof.verifier.notes, and every tampering refused."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from gpuproof.verifier import notes, signatures
from hypothesis import given
from hypothesis import strategies as st

from tests.support.note_oracle import node_verify, spec_verify

VECTORS = json.loads((Path(__file__).resolve().parents[1] / "vectors" / "signed_note.json").read_text())
SEED = bytes(range(32))
KEY = signatures.private_key_from_bytes(SEED)
PUBLIC = signatures.public_key_bytes(KEY)
ORIGIN = "gateway.example/log"
ROOT = hashlib.sha256(b"a root").digest()


def signer_of(signer_key: str):  # noqa: ANN201
    """An Ed25519 private key from sumdb/note's signer key encoding PRIVATE+KEY+<name>+<id>+base64(0x01 || seed)."""
    raw = base64.b64decode(signer_key.split("+", 4)[4])
    assert raw[0] == notes.ED25519
    return signatures.private_key_from_bytes(raw[1:])


@pytest.mark.parametrize("v", VECTORS["signing"], ids=lambda v: v["desc"])
def test_signing_reproduces_gos_note_bytes(v):
    key = signer_of(v["signer_key"])
    name, _ = notes.parse_verifier_key(v["verifier_key"])
    assert notes.verifier_key(name, signatures.public_key_bytes(key)) == v["verifier_key"]
    assert notes.sign(v["text"], name, key) == v["note"]


@pytest.mark.parametrize("v", VECTORS["opening"], ids=lambda v: v["desc"])
def test_notes_signed_by_go_open(v):
    name, public = notes.parse_verifier_key(v["verifier_key"])
    assert notes.open_note(v["note"], name, public) == v["text"]


@pytest.mark.parametrize("v", VECTORS["checkpoints"], ids=lambda v: v["desc"])
def test_a_real_logs_checkpoint_verifies(v):
    name, public = notes.parse_verifier_key(v["verifier_key"])
    cp = notes.Checkpoint.open(v["note"], public, origin=v["origin"], name=name)
    assert (cp.origin, cp.size, cp.root) == (v["origin"], v["size"], base64.b64decode(v["root_base64"]))
    assert cp.text() == v["note"][:v["note"].rindex("\n\n") + 1]  # it re-encodes to the very bytes signed
    with pytest.raises(notes.NoteError, match="want 'another log'"):
        notes.Checkpoint.open(v["note"], public, origin="another log", name=name)
    with pytest.raises(notes.NoteError, match="must not contain ' '"):  # signed under its key name, not its origin
        notes.Checkpoint.open(v["note"], public)


@pytest.mark.parametrize("v", VECTORS["checkpoints"], ids=lambda v: v["desc"])
def test_the_javascript_verifier_agrees_with_go_on_a_real_checkpoint(v):
    """tests/support/checkpoint_verify.mjs, the tests' JavaScript verifier, is itself checked on Go's vector."""
    out = node_verify(v["verifier_key"], v["note"])
    if out is None:
        pytest.skip("node is not installed")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"origin": v["origin"], "size": v["size"],
                                      "root_hex": base64.b64decode(v["root_base64"]).hex()}
    changed = node_verify(v["verifier_key"], v["note"].replace("6476701", "6476702"))
    assert changed is not None and changed.returncode == 1 and "does not verify" in changed.stderr


def test_our_checkpoint_verifies_with_a_verifier_written_from_the_spec():
    note = notes.Checkpoint(ORIGIN, 42, ROOT).sign(KEY)
    assert note.startswith(f"{ORIGIN}\n42\n{base64.b64encode(ROOT).decode()}\n\n\u2014 {ORIGIN} ")
    assert spec_verify(note, ORIGIN, PUBLIC) == (ORIGIN, 42, ROOT)
    assert notes.Checkpoint.open(note, PUBLIC, origin=ORIGIN) == notes.Checkpoint(ORIGIN, 42, ROOT)


@pytest.mark.parametrize("desc, change", [
    ("size", lambda n: n.replace("\n42\n", "\n43\n", 1)),
    ("root", lambda n: n.replace(base64.b64encode(ROOT).decode(), base64.b64encode(bytes(32)).decode(), 1)),
    ("origin", lambda n: n.replace(ORIGIN, "gateway.example/other", 1)),
    ("extension line added", lambda n: n.replace("\n\n", "\nextra\n\n", 1)),
])
def test_a_tampered_checkpoint_fails_both_verifiers(desc, change):
    note = change(notes.Checkpoint(ORIGIN, 42, ROOT).sign(KEY))
    with pytest.raises(InvalidSignature):
        spec_verify(note, ORIGIN, PUBLIC)
    with pytest.raises(notes.NoteError, match="signature does not verify|no signature by"):
        notes.Checkpoint.open(note, PUBLIC, name=ORIGIN)


def test_a_checkpoint_signed_by_another_key_under_the_same_name_is_refused():
    other = signatures.private_key_from_bytes(bytes(32))
    note = notes.Checkpoint(ORIGIN, 42, ROOT).sign(other)
    with pytest.raises(notes.NoteError, match=f"no signature by {ORIGIN}\\+{notes.key_id(ORIGIN, PUBLIC).hex()}"):
        notes.Checkpoint.open(note, PUBLIC)
    # the other key's line is ignored, ours verifies: a note may carry several signatures (witnesses)
    both = note + notes.Checkpoint(ORIGIN, 42, ROOT).sign(KEY).split("\n\n")[1]
    assert notes.Checkpoint.open(both, PUBLIC).size == 42


def test_a_forged_line_with_our_key_id_rejects_the_note_even_beside_a_good_one():
    good = notes.Checkpoint(ORIGIN, 42, ROOT).sign(KEY)
    blob = base64.b64encode(notes.key_id(ORIGIN, PUBLIC) + signatures.sign(KEY, b"another text")).decode()
    forged = f"\u2014 {ORIGIN} {blob}\n"
    with pytest.raises(notes.NoteError, match="signature does not verify"):
        notes.open_note(good + forged, ORIGIN, PUBLIC)


@pytest.mark.parametrize("text, error", [
    ("origin\n042\n" + base64.b64encode(ROOT).decode() + "\n", "no leading zero"),
    ("origin\n-1\n" + base64.b64encode(ROOT).decode() + "\n", "no leading zero"),
    ("origin\n42\n" + base64.b64encode(ROOT[:31]).decode() + "\n", "32 bytes"),
    ("origin\n42\n" + base64.urlsafe_b64encode(b"\xff" * 32).decode() + "\n", "standard base64"),
    ("origin\n42\n" + base64.b64encode(ROOT).decode().rstrip("=") + "\n", "canonical base64|standard base64"),
    ("origin\n42\n", "at least three"),
    ("origin\n42\n" + base64.b64encode(ROOT).decode() + "\n\next\n", "non-empty"),
    ("origin\n42\n" + base64.b64encode(ROOT).decode(), "ends with a newline"),
])
def test_malformed_checkpoint_texts_are_refused(text, error):
    with pytest.raises(notes.NoteError, match=error):
        notes.Checkpoint.parse(text)


@pytest.mark.parametrize("note, error", [
    ("text\n", "no blank line"),
    ("text\n\n", "must end with a newline, and there must be one"),
    ("text\n\n- name AAAAAAAA\n", "em dash"),
    ("text\n\n\u2014 name\n", "<name> <base64>"),
    ("te\x01xt\n\n\u2014 name AAAAAAAA\n", "control character"),
    ("text\n\n\u2014 a+b AAAAAAAA\n", "must not contain '\\+'"),
    ("text\n\n\u2014 name AAAA\n", "3 bytes"),
])
def test_malformed_notes_are_refused(note, error):
    with pytest.raises(notes.NoteError, match=error):
        notes.open_note(note, "name", PUBLIC)


def test_verifier_keys_round_trip_and_their_id_is_checked():
    vkey = notes.verifier_key(ORIGIN, PUBLIC)
    assert notes.parse_verifier_key(vkey) == (ORIGIN, PUBLIC)
    name, key_hash, b64 = vkey.split("+", 2)
    with pytest.raises(notes.NoteError, match="is not its key's"):
        notes.parse_verifier_key(f"{name}+{'0' * 8}+{b64}")
    ecdsa = base64.b64encode(bytes([2]) + PUBLIC).decode()
    with pytest.raises(notes.NoteError, match="not an Ed25519 key"):
        notes.parse_verifier_key(f"{name}+{key_hash}+{ecdsa}")


@given(flip=st.integers(0, 10_000), bit=st.integers(0, 7))
def test_any_changed_byte_of_a_signed_checkpoint_is_refused(flip, bit):
    raw = bytearray(notes.Checkpoint(ORIGIN, 42, ROOT).sign(KEY).encode())
    raw[flip % len(raw)] ^= 1 << bit
    with pytest.raises(notes.NoteError):
        notes.Checkpoint.open(bytes(raw), PUBLIC, origin=ORIGIN)
