"""Signed notes (C2SP signed-note) and transparency-log checkpoints (C2SP tlog-checkpoint): the log's tree
heads in the format existing transparency-log tooling reads (Go's golang.org/x/mod/sumdb/note and
github.com/transparency-dev/formats/log, among others). docs/gateway.md, "Checkpoints", has a worked example.

A checkpoint is the note text

    <origin>\\n<tree size, decimal>\\n<base64 of the 32-byte RFC 6962 root>\\n[<extension line>\\n ...]

followed by a blank line and one signature line per signer:

    \u2014 <key name> <base64(key ID (4 bytes) || Ed25519 signature of the note text (64 bytes))>\\n

with key ID = SHA-256(key name || 0x0A || 0x01 || 32-byte public key)[:4] (0x01: the Ed25519 signature
type). The gateway's key name is the log's origin. A verifier knows (name, public key) beforehand, ignores
signature lines from other keys, rejects the note when a line from its key does not verify, and rejects it
when none does. A note verifier key, `<name>+<key ID hex>+<base64(0x01 || public key)>`, names such a key
in one string (the format sumdb/note's NewVerifier reads).

Pure: strings and bytes in, values or a `NoteError` out. Ed25519 is verified strictly
(`gpuproof.verifier.signatures.verify`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass

from gpuproof.kernels.errors import GpuproofError
from gpuproof.verifier import signatures

ED25519 = 0x01  # the signed-note signature type of Ed25519
EM_DASH = "\u2014"
MAX_SIGNATURES = 100  # per note; the spec asks verifiers to accept at least 16
_DECIMAL = re.compile(r"0|[1-9][0-9]*")
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


class NoteError(GpuproofError):
    """A signed note or checkpoint is malformed or does not verify; the message says which."""


def key_id(name: str, public_key: bytes) -> bytes:
    """The 4-byte key ID of an Ed25519 note key: SHA-256(name || 0x0A || 0x01 || public key)[:4]."""
    check_key_name(name)
    return hashlib.sha256(name.encode() + b"\n" + bytes([ED25519]) + bytes(public_key)).digest()[:4]


def check_key_name(name: str) -> None:
    """A key name is non-empty, with no Unicode space and no '+' (signed-note, "Format")."""
    if not name:
        raise NoteError("a note key name must not be empty")
    bad = next((c for c in name if c.isspace() or c == "+" or ord(c) < 0x20), None)
    if bad is not None:
        raise NoteError(f"a note key name must not contain {bad!r}: {name!r}")


def verifier_key(name: str, public_key: bytes) -> str:
    """The note verifier key `<name>+<key ID hex>+<base64(0x01 || public key)>` naming an Ed25519 key."""
    return f"{name}+{key_id(name, public_key).hex()}+{_b64(bytes([ED25519]) + bytes(public_key))}"


def parse_verifier_key(text: str) -> tuple[str, bytes]:
    """(name, 32-byte public key) from a note verifier key, its key ID checked."""
    name, _, rest = text.partition("+")
    hash_hex, _, key_b64 = rest.partition("+")
    check_key_name(name)
    if not re.fullmatch(r"[0-9a-f]{8}", hash_hex):
        raise NoteError(f"a verifier key is <name>+<8 hex digits>+<base64 key>, got {text!r}")
    raw = _unb64(key_b64, "the verifier key")
    if len(raw) != 33 or raw[0] != ED25519:
        raise NoteError(f"the verifier key is not an Ed25519 key (type byte 0x01 and 32 bytes), got {len(raw)} "
                        f"bytes starting {raw[:1].hex() or 'nothing'}")
    if key_id(name, raw[1:]).hex() != hash_hex:
        raise NoteError(f"the verifier key's ID {hash_hex} is not its key's ({key_id(name, raw[1:]).hex()})")
    return name, raw[1:]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str, what: str) -> bytes:
    """Standard, padded base64 (RFC 4648, section 4), canonical: re-encoding gives the same text."""
    if not _BASE64.fullmatch(text):
        raise NoteError(f"{what} is not standard base64")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise NoteError(f"{what} is not standard base64") from None
    if _b64(raw) != text:
        raise NoteError(f"{what} is not canonical base64")
    return raw


def _check_text(text: str, what: str) -> None:
    bad = next((c for c in text if ord(c) < 0x20 and c != "\n"), None)
    if bad is not None:
        raise NoteError(f"{what} holds the control character {bad!r}")


def sign(text: str, name: str, private_key) -> str:  # noqa: ANN001
    """The signed note: `text` (non-empty lines... ending in a newline), a blank line and the signature line
    of `private_key` under key name `name`."""
    if not text.endswith("\n"):
        raise NoteError("a note's text must end with a newline")
    _check_text(text, "the note text")
    public = signatures.public_key_bytes(private_key)
    sig = signatures.sign(private_key, text.encode())
    return f"{text}\n{EM_DASH} {name} {_b64(key_id(name, public) + sig)}\n"


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: the key name, the key ID, the signature bytes after it."""

    name: str
    key_id: bytes
    signature: bytes


def split(note: str | bytes) -> tuple[str, list[NoteSignature]]:
    """A signed note's text (with its final newline) and its signature lines, parsed but not verified."""
    if isinstance(note, bytes):
        try:
            note = note.decode()
        except UnicodeDecodeError:
            raise NoteError("a signed note must be UTF-8") from None
    _check_text(note, "the signed note")
    cut = note.rfind("\n\n")
    if cut < 0:
        raise NoteError("a signed note is its text, a blank line, then signature lines: no blank line found")
    text, lines = note[:cut + 1], note[cut + 2:]
    if not lines or not lines.endswith("\n"):
        raise NoteError("a signed note's signature lines must end with a newline, and there must be one")
    sigs = []
    for line in lines[:-1].split("\n"):
        if not line.startswith(EM_DASH + " "):
            raise NoteError(f"a signature line starts with an em dash and a space: {line[:40]!r}")
        name, space, b64 = line[2:].partition(" ")
        if not space:
            raise NoteError(f"a signature line is '\u2014 <name> <base64>': {line[:40]!r}")
        check_key_name(name)
        raw = _unb64(b64, f"the signature of {name}")
        if len(raw) < 5:
            raise NoteError(f"the signature of {name} is {len(raw)} bytes, want a 4-byte key ID and a signature")
        sigs.append(NoteSignature(name, raw[:4], raw[4:]))
    if len(sigs) > MAX_SIGNATURES:
        raise NoteError(f"{len(sigs)} signatures on one note; at most {MAX_SIGNATURES} are read")
    return text, sigs


def open_note(note: str | bytes, name: str, public_key: bytes) -> str:
    """The note's text, once its signature by the Ed25519 key (`name`, `public_key`) verifies.

    Signature lines of other keys (another name or key ID) are ignored; a line of this key that does not
    verify rejects the note, and so does a note with no line of this key (signed-note, "Signatures")."""
    text, sigs = split(note)
    want = key_id(name, public_key)
    mine = [s for s in sigs if s.name == name and hmac.compare_digest(s.key_id, want)]
    if not mine:
        others = ", ".join(f"{s.name}+{s.key_id.hex()}" for s in sigs)
        raise NoteError(f"the note has no signature by {name}+{want.hex()} (it has {others})")
    for s in mine:
        try:
            signatures.verify(public_key, text.encode(), s.signature)
        except signatures.SignatureError as exc:
            raise NoteError(f"the signature by {name}+{want.hex()}: {exc}") from None
    return text


@dataclass(frozen=True)
class Checkpoint:
    """A log's tree head as a tlog-checkpoint note text: origin, tree size, RFC 6962 root, extension lines."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin:
            raise NoteError("a checkpoint's origin must be one non-empty line")
        _check_text(self.origin, "the origin")
        if self.size < 0:
            raise NoteError(f"a tree size is not negative, got {self.size}")
        if len(self.root) != 32:
            raise NoteError(f"a root hash is 32 bytes, got {len(self.root)}")
        for line in self.extensions:
            if not line or "\n" in line:
                raise NoteError("an extension line must be one non-empty line")
            _check_text(line, "an extension line")

    def text(self) -> str:
        """The note text, ending in a newline."""
        return "".join(f"{line}\n" for line in (self.origin, str(self.size), _b64(self.root), *self.extensions))

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """A checkpoint from a note text (as `open_note` returns it), strictly: at least three non-empty
        lines; the size in decimal with no leading zero; the root 32 bytes of canonical standard base64."""
        if not text.endswith("\n"):
            raise NoteError("a checkpoint's text ends with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3 or any(not line for line in lines):
            raise NoteError(f"a checkpoint is at least three non-empty lines (origin, size, root), got {lines[:4]!r}")
        origin, size, root, *extensions = lines
        if not _DECIMAL.fullmatch(size):
            raise NoteError(f"a checkpoint's tree size is decimal with no leading zero, got {size!r}")
        return cls(origin, int(size), _unb64(root, "the checkpoint's root hash"), tuple(extensions))

    def sign(self, private_key, name: str | None = None) -> str:  # noqa: ANN001
        """The signed checkpoint, signed under key name `name` (default: the origin, as the spec advises)."""
        return sign(self.text(), name or self.origin, private_key)

    @classmethod
    def open(cls, note: str | bytes, public_key: bytes, origin: str | None = None,
             name: str | None = None) -> Checkpoint:
        """A signed checkpoint verified with `public_key` under key name `name` (default: the origin), and,
        when `origin` is given, checked to be that log's."""
        text, _ = split(note)
        checkpoint = cls.parse(text)
        if origin is not None and checkpoint.origin != origin:
            raise NoteError(f"the checkpoint is of log {checkpoint.origin!r}, want {origin!r}")
        open_note(note, name or checkpoint.origin, public_key)
        return checkpoint
