"""Log entries that bind a challenge's evidence (verifier/evidence.py): bodies, the transcript check, the audit."""

from __future__ import annotations

import json

import pytest
from gpuproof.kernels import merkle
from gpuproof.simulators.protocol import Honest
from gpuproof.verifier import evidence, transcript
from gpuproof.verifier.protocol import Verifier
from hypothesis import given, settings
from hypothesis import strategies as st

SHAPE = (16, 256, 64, 3)
V = Verifier()
PROVIDER = "ab" * 16


def judged() -> dict:
    """An honest challenge's transcript."""
    challenge = V.issue("cpu-reference", now=1000.0, shape=SHAPE)
    held = Honest().commit(challenge.params)
    commitment = V.commit(challenge, held.roots, received_at=1000.0 + challenge.thresholds.expected_s, rtt_s=0.0)
    request = V.request_openings(challenge, commitment)
    openings = [held.honest_opening(challenge.params, r, i) for r, i in sorted(set(request.pairs))]
    return transcript.build(challenge, commitment, request, openings, V.judge(challenge, commitment, request,
                                                                              openings))


DOC = judged()
CID = DOC["challenge"]["challenge_id"]


def entries_of(doc: dict, first_index: int = 3) -> list[tuple[int, str]]:
    """The three entries a gateway logs for `doc`, as (index, text), at consecutive indices."""
    roots = [bytes.fromhex(h) for h in doc["commitment"]["roots"]]
    bodies = [
        evidence.entry_text(evidence.COMMITMENT, doc["commitment"]["received_at"],
                            evidence.commitment_payload(CID, PROVIDER, roots)),
        evidence.entry_text(evidence.OPENING_REQUEST, doc["commitment"]["received_at"] + 0.001,
                            evidence.request_payload(CID, PROVIDER, doc["request"]["pairs"],
                                                     bytes.fromhex(doc["request"]["x"]))),
        evidence.entry_text(evidence.VERDICT, 1100.0, evidence.verdict_payload(CID, PROVIDER, doc["verdict"],
                                                                               evidence.transcript_digest(doc))),
    ]
    return [(first_index + i, b) for i, b in enumerate(bodies)]


def edit(text: str, **changes: object) -> str:
    return evidence.canonical(json.loads(text) | changes).decode()


def test_bodies_are_canonical_and_bind_the_roots_x_pairs_and_transcript():
    c, r, v = (json.loads(t) for _, t in entries_of(DOC))
    assert c == {"at": DOC["commitment"]["received_at"], "challenge_id": CID, "kind": "commitment",
                 "provider_id": PROVIDER, "roots_sha256": evidence.sha256_hex(
                     b"".join(bytes.fromhex(h) for h in DOC["commitment"]["roots"]))}
    assert r["kind"] == "opening-request" and r["pairs"] == DOC["request"]["pairs"]
    assert r["x_sha256"] == evidence.sha256_hex(bytes.fromhex(DOC["request"]["x"]))
    assert v["kind"] == "verdict" and v["verdict"] == DOC["verdict"]
    assert v["transcript_sha256"] == evidence.sha256_hex(transcript.encode(DOC))
    for _, text in entries_of(DOC):
        assert evidence.canonical(json.loads(text)).decode() == text
    assert " " not in entries_of(DOC)[0][1]
    assert evidence.canonical({"b": 1, "a": "é"}) == b'{"a":"\\u00e9","b":1}'


def test_an_honest_challenges_entries_bind_its_transcript():
    assert evidence.challenge_differences(DOC, entries_of(DOC)) == []


@pytest.mark.parametrize("which, changes, fragment", [
    (0, {"roots_sha256": "00" * 32}, "roots hash to"),
    (0, {"at": 5.0}, "arrived at 5.0"),
    (1, {"x_sha256": "00" * 32}, "x hashes to"),
    (1, {"pairs": [[0, 0]]}, "pairs [[0, 0]]"),
    (2, {"transcript_sha256": "00" * 32}, "this transcript hashes to"),
    (2, {"verdict": {"outcome": "pass"}}, "the logged verdict is not the transcript's"),
    (2, {"challenge_id": "cd" * 16}, f"is about challenge '{'cd' * 16}'"),
])
def test_each_changed_field_is_named(which, changes, fragment):
    entries = entries_of(DOC)
    index, text = entries[which]
    entries[which] = (index, edit(text, **changes))
    diffs = evidence.challenge_differences(DOC, entries)
    assert any(fragment in d for d in diffs), diffs


def test_a_changed_transcript_no_longer_matches_its_entries():
    doc = json.loads(json.dumps(DOC))
    doc["commitment"]["roots"][0] = "11" * 32
    doc["request"]["x"] = "00" * (len(doc["request"]["x"]) // 2)
    diffs = evidence.challenge_differences(doc, entries_of(DOC))
    assert [d.split(":")[0] for d in diffs] == ["commitment entry 3", "opening-request entry 4", "verdict entry 5"]


def test_missing_and_repeated_entries():
    entries = entries_of(DOC)
    assert evidence.challenge_differences(DOC, entries[1:]) == [f"no commitment entry for challenge {CID} in the log"]
    diffs = evidence.challenge_differences(DOC, entries + [(9, entries[2][1])])
    assert diffs == [f"2 verdict entries for challenge {CID} (entries 5, 9); want one"]


def test_an_opening_request_logged_before_its_commitment_is_caught():
    (c, ct), (r, rt), v = entries_of(DOC)
    diffs = evidence.challenge_differences(DOC, [(r, ct), (c, rt), v])
    assert diffs == [f"the opening request (entry {c}) is logged before the commitment (entry {r}): x may have "
                     "been drawn before the roots were fixed"]
    late = evidence.challenge_differences(DOC, [(c, ct), (v[0], rt), (r, v[1])])
    assert f"the verdict (entry {r}) is logged before the opening request (entry {v[0]})" in late


def log_of(texts: list[str]) -> list[tuple[int, str, str, str]]:
    return [(i, json.loads(t)["kind"], t, evidence.leaf_of(t).hex()) for i, t in enumerate(texts)]


def honest_log() -> list[str]:
    registration = evidence.entry_text("registration", 900.0, {"provider_id": PROVIDER, "name": "box"})
    return [registration] + [t for _, t in entries_of(DOC, 1)]


def audited(rows) -> evidence.LogAudit:  # noqa: ANN001
    audit = evidence.LogAudit()
    for row in rows:
        audit.add(*row)
    return audit


def test_the_audit_of_an_honest_log_recomputes_its_root():
    texts = honest_log()
    audit = audited(log_of(texts))
    audit.check_root(len(texts), merkle.MerkleTree.from_leaves([t.encode() for t in texts]).root)
    assert audit.differences == [] and audit.size == 4


def test_the_audit_catches_a_changed_body_a_wrong_kind_and_a_gap():
    rows = log_of(honest_log())
    changed = edit(rows[1][2], roots_sha256="00" * 32)
    rows[1] = (1, "commitment", changed, rows[1][3])  # the stored leaf hash is the old one
    rows[2] = (2, "verdict", rows[2][2], rows[2][3])
    audit = audited(rows[:3])
    audit.add(5, "verdict", rows[3][2], rows[3][3])
    audit.check_root(4, b"\0" * 32)
    assert [d.split(":")[0] for d in audit.differences] == ["entry 1", "entry 2", "entry 3 is missing (the next entry "
                                                            "served is 5)", "only 3 of the head's 4 entries were "
                                                            "served"]
    assert "the body was changed" in audit.differences[0]


def test_the_audit_catches_a_request_before_its_commitment_and_a_repeated_entry():
    texts = honest_log()
    swapped = [texts[0], texts[2], texts[1], texts[3], texts[1]]
    diffs = audited(log_of(swapped)).differences
    assert diffs == [f"entry 1: an opening request for challenge {CID} before any commitment",
                     f"entry 2: a commitment entry for challenge {CID} after its opening-request entry",
                     f"entry 4: a commitment entry for challenge {CID} after its verdict entry"]


def test_the_audit_flags_a_body_that_is_not_canonical():
    texts = honest_log()
    texts[0] = texts[0].replace(",", ", ", 1)
    assert audited(log_of(texts)).differences == ["entry 0: not canonical JSON"]


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_changed_byte_of_any_entry_is_caught(data):
    texts = honest_log()
    rows = log_of(texts)
    root = merkle.MerkleTree.from_leaves([t.encode() for t in texts]).root
    i = data.draw(st.integers(0, len(texts) - 1))
    pos = data.draw(st.integers(0, len(texts[i]) - 1))
    new = data.draw(st.characters(min_codepoint=32, max_codepoint=126).filter(lambda ch: ch != texts[i][pos]))
    index, kind, text, leaf = rows[i]
    rows[i] = (index, kind, text[:pos] + new + text[pos + 1:], leaf)
    audit = audited(rows)
    audit.check_root(len(texts), root)
    assert any(d.startswith(f"entry {i}: its body hashes to leaf") for d in audit.differences), audit.differences
    assert audit.differences[-1].startswith("the 4 entries' bodies give root")
