"""Log entries that bind a challenge's evidence (docs/protocol.md, "Evidence"; docs/gateway.md, "The log").

Three entries record one challenge, appended by the gateway in the transactions that store what they
record, so they reach the log in this order:

1. ``commitment``       challenge id, provider id, SHA-256 of the R roots concatenated (32 bytes each, in
                        round order), ``at`` = when the commitment had arrived (the transcript's
                        ``commitment.received_at``).
2. ``opening-request``  challenge id, provider id, the drawn (round, row) pairs, SHA-256 of x as
                        little-endian uint32 (the transcript's ``request.x`` bytes).
3. ``verdict``          challenge id, provider id, the verdict, and ``transcript_sha256``: SHA-256 of the
                        canonical transcript (null for a timeout or withheld verdict, which has none).

Every entry is canonical JSON (`canonical`) with ``kind`` and ``at``; its leaf is SHA-256(0x00 || the
entry's bytes). A checker hashes the bytes it was served and parses them; it never re-serialises.

Pure: the gateway builds bodies with `entry_text`, `gpuproof verify-transcript` checks a transcript
against its entries with `challenge_differences`, and `gpuproof log verify --entries` streams every
entry through a `LogAudit`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Sequence
from typing import Any

from gpuproof.kernels import merkle

COMMITMENT = "commitment"
OPENING_REQUEST = "opening-request"
VERDICT = "verdict"
CHALLENGE_KINDS = (COMMITMENT, OPENING_REQUEST, VERDICT)  # in the order the log must hold them


def canonical(payload: Any) -> bytes:
    """Canonical JSON: keys sorted, no spaces, non-ASCII escaped as \\uXXXX, so the bytes are ASCII (UTF-8)."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def roots_digest(roots: Sequence[bytes]) -> str:
    """SHA-256 of the committed roots concatenated in round order."""
    return sha256_hex(b"".join(roots))


def transcript_digest(doc: dict[str, Any]) -> str:
    """SHA-256 of a transcript's canonical JSON (the bytes GET /v1/challenges/{id}/transcript serves;
    `gpuproof.verifier.transcript.encode`)."""
    return sha256_hex(canonical(doc))


def entry_text(kind: str, at: float, payload: dict[str, Any]) -> str:
    """The exact text of a log entry: the payload with its kind and time, canonical."""
    return canonical({**payload, "kind": kind, "at": at}).decode()


def leaf_of(text: str) -> bytes:
    """The entry's RFC 6962 leaf hash."""
    return merkle.leaf_hash(text.encode())


def commitment_payload(challenge_id: str, provider_id: str, roots: Sequence[bytes]) -> dict[str, Any]:
    """A commitment entry (logged with ``at`` = its arrival time)."""
    return {"challenge_id": challenge_id, "provider_id": provider_id, "roots_sha256": roots_digest(roots)}


def request_payload(challenge_id: str, provider_id: str, pairs: Sequence[Sequence[int]],
                    x_le_u32: bytes) -> dict[str, Any]:
    """An opening-request entry: the pairs in the order drawn, and the hash of x's wire bytes."""
    return {"challenge_id": challenge_id, "provider_id": provider_id,
            "pairs": [[int(r), int(i)] for r, i in pairs], "x_sha256": sha256_hex(x_le_u32)}


def verdict_payload(challenge_id: str, provider_id: str, verdict: dict[str, Any],
                    transcript_sha256: str | None) -> dict[str, Any]:
    """A verdict entry; `transcript_sha256` is None when there are no openings (a timeout or withheld)."""
    return {"challenge_id": challenge_id, "provider_id": provider_id, "verdict": verdict,
            "transcript_sha256": transcript_sha256}


def _parse(index: int, text: str) -> tuple[dict[str, Any] | None, str | None]:
    try:
        body = json.loads(text)
    except ValueError as exc:
        return None, f"entry {index}: not JSON ({exc})"
    if not isinstance(body, dict) or not isinstance(body.get("kind"), str):
        return None, f"entry {index}: not a JSON object with a kind"
    return body, None


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def challenge_differences(doc: dict[str, Any], entries: Sequence[tuple[int, str]]) -> list[str]:
    """How a transcript and its challenge's log entries disagree; empty when the log binds it.

    `entries` are (index, exact text) pairs, each already checked to be in a signed tree. The log must
    hold exactly one entry of each kind for the challenge, with the transcript's roots hash and arrival
    time, its pairs and x hash, its verdict and transcript hash, in the order commitment, opening request,
    verdict: so the roots were on record before x was drawn. Precondition: `doc` parsed as a transcript.
    """
    challenge_id = doc["challenge"]["challenge_id"]
    diffs: list[str] = []
    found: dict[str, list[tuple[int, dict[str, Any]]]] = {k: [] for k in CHALLENGE_KINDS}
    for index, text in entries:
        body, problem = _parse(index, text)
        if body is None:
            diffs.append(problem or f"entry {index}: unreadable")
            continue
        if body.get("challenge_id") != challenge_id:
            diffs.append(f"entry {index} is about challenge {body.get('challenge_id')!r}, not {challenge_id}")
        elif body["kind"] in found:
            found[body["kind"]].append((index, body))
    for kind, got in found.items():
        if not got:
            diffs.append(f"no {kind} entry for challenge {challenge_id} in the log")
        elif len(got) > 1:
            diffs.append(f"{len(got)} {kind} entries for challenge {challenge_id} (entries "
                         f"{', '.join(str(i) for i, _ in got)}); want one")
    c, r, v = (got[0] if len(got) == 1 else None for got in found.values())
    commitment, request = doc["commitment"], doc["request"]
    if c is not None:
        want = roots_digest([bytes.fromhex(h) for h in commitment["roots"]])
        if not _same(str(c[1].get("roots_sha256")), want):
            diffs.append(f"commitment entry {c[0]}: roots_sha256 {c[1].get('roots_sha256')}, but the transcript's "
                         f"roots hash to {want}")
        if c[1].get("at") != commitment["received_at"]:
            diffs.append(f"commitment entry {c[0]}: arrived at {c[1].get('at')!r}, but the transcript says "
                         f"{commitment['received_at']!r}")
    if r is not None:
        want = sha256_hex(bytes.fromhex(request["x"]))
        if not _same(str(r[1].get("x_sha256")), want):
            diffs.append(f"opening-request entry {r[0]}: x_sha256 {r[1].get('x_sha256')}, but the transcript's x "
                         f"hashes to {want}")
        if r[1].get("pairs") != request["pairs"]:
            diffs.append(f"opening-request entry {r[0]}: pairs {r[1].get('pairs')}, but the transcript's are "
                         f"{request['pairs']}")
    if v is not None:
        want = transcript_digest(doc)
        if not _same(str(v[1].get("transcript_sha256")), want):
            diffs.append(f"verdict entry {v[0]}: transcript_sha256 {v[1].get('transcript_sha256')}, but this "
                         f"transcript hashes to {want}")
        if v[1].get("verdict") != doc["verdict"]:
            diffs.append(f"verdict entry {v[0]}: the logged verdict is not the transcript's")
    if c is not None and r is not None and not c[0] < r[0]:
        diffs.append(f"the opening request (entry {r[0]}) is logged before the commitment (entry {c[0]}): "
                     "x may have been drawn before the roots were fixed")
    if r is not None and v is not None and not r[0] < v[0]:
        diffs.append(f"the verdict (entry {v[0]}) is logged before the opening request (entry {r[0]})")
    if c is not None and v is not None and not c[0] < v[0]:
        diffs.append(f"the verdict (entry {v[0]}) is logged before the commitment (entry {c[0]})")
    return diffs


class LogAudit:
    """Every entry of a log, fed in index order: each leaf recomputed from its body, each body read, the
    order of each challenge's entries checked, and the root of the recomputed leaves compared with a
    signed head's. `differences` collects what does not hold; the audit goes on after one.
    """

    def __init__(self) -> None:
        self.leaves = bytearray()
        self.differences: list[str] = []
        self._stage: dict[str, int] = {}  # challenge id -> the last of CHALLENGE_KINDS logged for it

    @property
    def size(self) -> int:
        return len(self.leaves) // merkle.HASH_BYTES

    def add(self, index: int, kind: str, text: str, leaf_hash_hex: str) -> None:
        """Entry `index` as served: its kind column, its exact text and the leaf hash the log claims."""
        if index != self.size:
            self.differences.append(f"entry {self.size} is missing (the next entry served is {index})")
            return
        leaf = leaf_of(text)
        self.leaves += leaf
        if not _same(leaf.hex(), leaf_hash_hex):
            self.differences.append(f"entry {index}: its body hashes to leaf {leaf.hex()}, the log says "
                                    f"{leaf_hash_hex}: the body was changed")
        body, problem = _parse(index, text)
        if body is None:
            self.differences.append(problem or f"entry {index}: unreadable")
            return
        if canonical(body).decode() != text:
            self.differences.append(f"entry {index}: not canonical JSON")
        if body["kind"] != kind:
            self.differences.append(f"entry {index}: listed as {kind!r}, its body says {body['kind']!r}")
        if body["kind"] in CHALLENGE_KINDS:
            self._order(index, body)

    def _order(self, index: int, body: dict[str, Any]) -> None:
        cid, stage = str(body.get("challenge_id")), CHALLENGE_KINDS.index(body["kind"])
        last = self._stage.get(cid, -1)
        if stage <= last:
            self.differences.append(f"entry {index}: a {body['kind']} entry for challenge {cid} after its "
                                    f"{CHALLENGE_KINDS[last]} entry")
        elif stage == 1 and last != 0:
            self.differences.append(f"entry {index}: an opening request for challenge {cid} before any commitment")
        self._stage[cid] = max(stage, last)

    def check_root(self, size: int, root: bytes) -> None:
        """Compare the recomputed tree of the first `size` entries with a signed head's root."""
        if self.size < size:
            self.differences.append(f"only {self.size} of the head's {size} entries were served")
            return
        mine = merkle.root_of_hashes(bytes(self.leaves[:size * merkle.HASH_BYTES]))
        if not hmac.compare_digest(mine, root):
            self.differences.append(f"the {size} entries' bodies give root {mine.hex()}, the signed head says "
                                    f"{root.hex()}")
