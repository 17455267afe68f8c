"""Log entries that bind the evidence (issue 19), against a live gateway: an honest challenge's commitment,
opening request and verdict are logged in order and `gpuproof verify-transcript` checks them; a body
changed in the database, an order forged in it and a rewritten history are each caught by the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from gpuproof.client import GatewayClient
from gpuproof.gateway.models import LogEntry, LogNode
from gpuproof.kernels import merkle
from gpuproof.kernels.reference import CpuBackend
from gpuproof.verifier import evidence, notes, signatures
from gpuproof.verifier.wire import ChallengeOut, VerdictOut
from sqlalchemy import create_engine, select, update

from tests.support import honest
from tests.support.calibrate import honest_test_shape, scaled
from tests.support.note_oracle import spec_verify
from tests.support.server import Server


@pytest.fixture
def live(database_url, tmp_path):
    # an honest provider's challenges allow it 1 s (scaled to this machine) of HTTP beyond the overhead
    # these tests edit the log's rows under a running gateway, as an operator might: it keeps none of the
    # hashes it served in memory (GPUPROOF_LOG_CACHE_HASHES=0), so that what it serves next is what was edited
    server = Server(database_url, tmp_path / "gw", GPUPROOF_VERIFY_TEST_SHAPE=honest_test_shape(1),
                    GPUPROOF_LOG_CACHE_HASHES="0").start()
    server.db_url = database_url
    yield server
    server.stop()


def first_challenge(client: GatewayClient) -> tuple[ChallengeOut, str]:
    """The provider's first challenge (it comes right after registering) and its round-trip probe."""
    deadline = time.monotonic() + scaled(30)
    while True:
        c, probe, _ = client.next_challenge(0)
        if c is not None:
            return c, probe
        assert time.monotonic() < deadline, "no first challenge"
        time.sleep(0.2)


def play(client: GatewayClient) -> tuple[str, VerdictOut]:
    """The provider's first challenge, answered honestly: its id and verdict."""
    c, probe = first_challenge(client)
    client.echo_rtt(probe)
    params = c.params()
    roots = CpuBackend().run(params)
    req = client.commit(c.challenge_id, roots)
    return c.challenge_id, client.open(c.challenge_id, honest.openings(params, roots, req.pairs))


def provider(server: Server) -> GatewayClient:
    client = GatewayClient(server.base, key=signatures.new_private_key())
    client.register("evidence", [{"model": "cpu-reference", "vram_gib": 1}])
    return client


def gpuproof(config_dir, *args: str) -> subprocess.CompletedProcess[str]:  # noqa: ANN001
    env = {k: v for k, v in os.environ.items() if k != "GPUPROOF_GATEWAY"} | {"GPUPROOF_CONFIG_DIR": str(config_dir)}
    return subprocess.run([sys.executable, "-m", "gpuproof", *args], capture_output=True, text=True, env=env,
                          timeout=scaled(120), stdin=subprocess.DEVNULL)


def rewrite(db_url: str, index: int, text: str, leaf: bool) -> None:
    """Change entry `index`'s body (and its kind), and with `leaf` its stored leaf hash too, and the stored
    subtree hashes above it (a tree consistent with the new leaves): an operator editing the database."""
    values: dict = {"body": text, "kind": json.loads(text)["kind"]}
    if leaf:
        values["leaf_hash"] = evidence.leaf_of(text)
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(update(LogEntry).where(LogEntry.idx == index).values(**values))
        if leaf:
            leaves = b"".join(conn.execute(select(LogEntry.leaf_hash).order_by(LogEntry.idx)).scalars())
            for height, idx, node in merkle.MerkleTree(leaves).perfect_nodes():
                conn.execute(update(LogNode).where(LogNode.height == height, LogNode.idx == idx).values(hash=node))
    engine.dispose()


def bodies(db_url: str) -> list[str]:
    engine = create_engine(db_url)
    with engine.connect() as conn:
        out = list(conn.execute(select(LogEntry.body).order_by(LogEntry.idx)).scalars())
    engine.dispose()
    return out


def indices(client: GatewayClient, cid: str) -> list[int]:
    """The log indices of a challenge's commitment, opening request and verdict."""
    mine = client.challenge_log(cid).entries
    assert [e.kind for e in mine] == ["commitment", "opening-request", "verdict"]
    return [e.index for e in mine]


def test_an_honest_challenges_entries_are_logged_in_order_and_verify_transcript_checks_them(live, tmp_path):
    with provider(live) as client:
        cid, verdict = play(client)
        assert verdict.outcome == "pass", verdict
        mine = client.challenge_log(cid).entries
        c_at, r_at, v_at = indices(client, cid)
        assert 0 < c_at < r_at < v_at  # after the registration
        size = client.tree_head().size
        doc = client.transcript(cid)
        c, r, v = (json.loads(e.entry) for e in mine)
        assert c["at"] == doc["commitment"]["received_at"] and r["pairs"] == doc["request"]["pairs"]
        assert v["transcript_sha256"] == evidence.transcript_digest(doc)
        raw = client._http.get(f"/v1/challenges/{cid}/transcript").content  # served as canonical bytes
        assert evidence.sha256_hex(raw) == v["transcript_sha256"]
    out = gpuproof(tmp_path / "cfg", "verify-transcript", cid, "--gateway", live.base, "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)
    assert report["differences"] == [] and report["log"]["binds_transcript"]
    assert report["log"]["entries"] == {"commitment": c_at, "opening-request": r_at, "verdict": v_at}
    plain = gpuproof(tmp_path / "cfg", "verify-transcript", cid, "--gateway", live.base)
    assert plain.returncode == 0 and f"the log binds it: commitment (entry {c_at}) -> opening request (entry " \
        f"{r_at})" in plain.stdout, plain.stdout
    audit = gpuproof(tmp_path / "cfg", "log", "verify", "--entries", "--gateway", live.base, "--json")
    assert audit.returncode == 0, audit.stdout + audit.stderr
    line = json.loads(audit.stdout)
    assert line | {"root": "", "key": "", "origin": "", "checkpoint": ""} == {
        "gateway": live.base, "size": size, "root": "", "previous_size": None, "consistent": True, "key": "",
        "origin": "", "checkpoint": "", "entries_audited": size, "differences": []}
    # the checkpoint it verified is one any signed-note verifier checks (tests/support/note_oracle.py)
    assert spec_verify(line["checkpoint"], line["origin"], bytes.fromhex(line["key"])) == (
        line["origin"], size, bytes.fromhex(line["root"]))
    assert report["log"]["checkpoint"].startswith(f"{line['origin']}\n{size}\n")


def test_a_head_stored_by_an_earlier_version_still_verifies_and_is_upgraded(live, tmp_path):
    """log-heads.json written by a version whose heads were signed over repr(timestamp): the next `log verify`
    checks that stored head by its older signature, the new checkpoint against it (consistency), and stores
    the checkpoint."""
    with provider(live) as client:
        play(client)
        old = client.tree_head()
    with provider(live) as other:  # the log grows: a registration and a challenge's three entries
        play(other)
    key_file = Path(live.env["GPUPROOF_DATA_DIR"]) / "gateway-signing.key"
    key = signatures.private_key_from_bytes(bytes.fromhex(key_file.read_text()))
    at = 1764590400.1234
    legacy = {"size": old.size, "root": old.root.hex(), "timestamp": at, "public_key": old.public_key.hex(),
              "signature": signatures.sign(key, signatures.tree_head_message(old.size, old.root, at)).hex()}
    store = tmp_path / "cfg" / "log-heads.json"
    store.parent.mkdir()
    store.write_text(json.dumps({live.base: legacy}))
    out = gpuproof(tmp_path / "cfg", "log", "verify", "--gateway", live.base)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"{old.size} -> {old.size + 4} entries, consistent" in out.stdout
    stored = json.loads(store.read_text())[live.base]
    assert stored["size"] == old.size + 4 and stored["checkpoint"].startswith(f"{stored['origin']}\n")
    # a stored older head that was tampered with is refused
    store.write_text(json.dumps({live.base: legacy | {"size": old.size - 1}}))
    bad = gpuproof(tmp_path / "cfg", "log", "verify", "--gateway", live.base)
    assert bad.returncode == 1 and "tree head signature: signature does not verify" in bad.stderr, bad.stderr


def test_a_timeout_is_logged_with_what_exists(live, tmp_path):
    """A provider that commits and never opens: its commitment and request are logged, then the timeout
    verdict, with no transcript hash (there is no transcript)."""
    with provider(live) as client:
        c, _ = first_challenge(client)
        client.commit(c.challenge_id, CpuBackend().run(c.params()))
    engine = create_engine(live.db_url)
    with engine.begin() as conn:  # its deadline and grace passed
        from gpuproof.gateway.models import Challenge

        conn.execute(update(Challenge).where(Challenge.id == c.challenge_id)
                     .values(issued_at=Challenge.issued_at - Challenge.deadline_s - 3600))
    engine.dispose()
    with GatewayClient(live.base, key=client.key, provider_id=client.provider_id) as again:
        again.next_challenge(0)  # the provider's next poll judges its overdue challenge
        entries = [json.loads(e.entry) for e in again.challenge_log(c.challenge_id).entries]
    assert [e["kind"] for e in entries] == ["commitment", "opening-request", "verdict"]
    assert entries[2]["transcript_sha256"] is None and entries[2]["verdict"]["failure"]["reason"] == "withheld"
    audit = gpuproof(tmp_path / "cfg", "log", "verify", "--entries", "--gateway", live.base)
    assert audit.returncode == 0 and "entries audited" in audit.stdout, audit.stdout + audit.stderr


def test_an_entry_body_changed_in_the_database_is_caught(live, tmp_path):
    with provider(live) as client:
        cid, _ = play(client)
        at = indices(client, cid)[0]
        size = client.tree_head().size
    assert gpuproof(tmp_path / "seen", "log", "verify", "--gateway", live.base).returncode == 0
    commitment = bodies(live.db_url)[at]
    rewrite(live.db_url, at, evidence.canonical(json.loads(commitment) | {"roots_sha256": "00" * 32}).decode(),
            leaf=False)
    # the heads alone still check out (the leaf hashes were not touched)...
    heads_only = gpuproof(tmp_path / "fresh", "log", "verify", "--gateway", live.base)
    assert heads_only.returncode == 0, heads_only.stderr
    # ...the entries do not
    audit = gpuproof(tmp_path / "seen", "log", "verify", "--entries", "--gateway", live.base)
    assert audit.returncode == 1, audit.stdout + audit.stderr
    assert f"entry {at}: its body hashes to leaf" in audit.stdout and "the body was changed" in audit.stdout
    assert f"the {size} entries' bodies give root" in audit.stdout
    check = gpuproof(tmp_path / "fresh", "verify-transcript", cid, "--gateway", live.base)
    assert check.returncode == 1, check.stdout + check.stderr
    assert "the recorded verdict stands" in check.stdout  # the transcript itself is fine
    assert "does NOT bind this transcript" in check.stdout
    assert f"entry {at} is not in the signed tree of {size}" in check.stdout


def test_an_opening_request_logged_before_its_commitment_is_caught(live, tmp_path):
    """An operator swaps a challenge's commitment and opening-request entries (leaf hashes and all), as if
    x had been drawn first: the tree is self-consistent, so only the order gives it away."""
    with provider(live) as client:
        cid, _ = play(client)
        c_at, r_at, _ = indices(client, cid)
        size = client.tree_head().size
    assert gpuproof(tmp_path / "seen", "log", "verify", "--gateway", live.base).returncode == 0
    texts = bodies(live.db_url)
    rewrite(live.db_url, c_at, texts[r_at], leaf=True)
    rewrite(live.db_url, r_at, texts[c_at], leaf=True)
    check = gpuproof(tmp_path / "fresh", "verify-transcript", cid, "--gateway", live.base, "--json")
    assert check.returncode == 1, check.stdout + check.stderr
    assert json.loads(check.stdout)["log"]["differences"] == [
        f"the opening request (entry {c_at}) is logged before the commitment (entry {r_at}): x may have been drawn "
        "before the roots were fixed"]
    audit = gpuproof(tmp_path / "fresh", "log", "verify", "--entries", "--gateway", live.base)
    assert audit.returncode == 1 and f"entry {c_at}: an opening request for challenge {cid} before any commitment" in \
        audit.stdout, audit.stdout + audit.stderr
    # and whoever saw the log before sees its history rewritten, when checking the transcript too
    check_seen = gpuproof(tmp_path / "seen", "verify-transcript", cid, "--gateway", live.base, "--json")
    assert check_seen.returncode == 1 and any(f"does not extend the one of {size} entries seen before" in d for d in
                                              json.loads(check_seen.stdout)["log"]["differences"]), check_seen.stdout
    seen = gpuproof(tmp_path / "seen", "log", "verify", "--gateway", live.base)
    assert seen.returncode == 1 and f"does not extend the one of {size} entries seen before" in seen.stderr, seen.stderr


def test_the_monitor_follows_a_growing_log_and_stops_at_a_rewritten_history(live, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "GPUPROOF_GATEWAY"} | {
        "GPUPROOF_CONFIG_DIR": str(tmp_path / "cfg")}
    with provider(live) as client:
        play(client)
        size = client.tree_head().size
        monitor = subprocess.Popen([sys.executable, "-m", "gpuproof", "log", "verify", "--follow", "--entries",
                                    "--interval", "0.2", "--max-checks", "600", "--gateway", live.base, "--json"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                   stdin=subprocess.DEVNULL)
        try:
            first = json.loads(monitor.stdout.readline())
            assert first["size"] == size and first["differences"] == [], first
            with provider(live) as other:  # the log grows (a registration, a challenge's 3 entries), consistently
                play(other)
            deadline = time.monotonic() + scaled(30)
            while True:
                line = json.loads(monitor.stdout.readline())
                assert line["differences"] == [] and line["consistent"], line
                if line["size"] >= size + 4:
                    break
                assert time.monotonic() < deadline, "the monitor never saw the new entries"
            assert line["previous_size"] >= size and line["entries_audited"] == line["size"]
            grown = line["size"]
            # history rewritten: an old entry replaced, leaf hash and all, so the head's root changes
            registration = bodies(live.db_url)[0]
            rewrite(live.db_url, 0, evidence.canonical(json.loads(registration) | {"name": "other"}).decode(),
                    leaf=True)
            out, err = monitor.communicate(timeout=scaled(60))
        finally:
            if monitor.poll() is None:
                monitor.kill()
                monitor.wait()
    assert monitor.returncode == 1, (out, err)
    assert f"does not extend the one of {grown} entries seen before" in err and len(err.strip().splitlines()) == 1, err


def test_the_monitor_stops_after_max_checks_with_every_check_consistent(live, tmp_path):
    """`log verify --follow --max-checks 3`: three checks of a quiet log, each a JSON line with the verified
    checkpoint, each consistent with the last; exit 0."""
    with provider(live):
        pass
    out = gpuproof(tmp_path / "cfg", "log", "verify", "--follow", "--entries", "--interval", "0.1", "--max-checks",
                   "3", "--gateway", live.base, "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(c["previous_size"], c["size"], c["consistent"], c["differences"]) for c in lines] == [
        (None, 1, True, []), (1, 1, True, []), (1, 1, True, [])]
    assert len({c["checkpoint"] for c in lines}) == 1  # one tree, one checkpoint, byte for byte


def test_a_log_key_given_up_front_is_held_to_from_the_first_check(live, tmp_path):
    """--log-key: a renter who knows the log's key beforehand trusts nothing on first use. A gateway whose
    log is signed by another key, or is another log (origin) under the same key, is refused before anything
    is pinned; a key that contradicts the one pinned earlier is refused as a parameter."""
    with provider(live) as client:
        cid, _ = play(client)
    head = httpx.get(f"{live.base}/v1/log/head").json()
    real, origin = head["verifier_key"], head["origin"]
    public = bytes.fromhex(head["public_key"])
    stranger = notes.verifier_key(origin, signatures.public_key_bytes(signatures.new_private_key()))
    other_log = notes.verifier_key("another.example/log", public)
    for key in (stranger, other_log):
        out = gpuproof(tmp_path / "fresh", "log", "verify", "--gateway", live.base, "--log-key", key)
        assert out.returncode == 1 and "Traceback" not in out.stderr, out.stdout + out.stderr
        assert not (tmp_path / "fresh" / "log-heads.json").exists() or live.base not in \
            (tmp_path / "fresh" / "log-heads.json").read_text()  # nothing pinned from a refused head
        bad = gpuproof(tmp_path / "fresh", "verify-transcript", cid, "--gateway", live.base, "--log-key", key)
        assert bad.returncode == 1 and "Traceback" not in bad.stderr, bad.stdout + bad.stderr
    assert "another key" in gpuproof(tmp_path / "fresh", "log", "verify", "--gateway", live.base, "--log-key",
                                     stranger).stderr
    for key in (real, public.hex()):
        ok = gpuproof(tmp_path / f"ok-{len(key)}", "log", "verify", "--gateway", live.base, "--log-key", key)
        assert ok.returncode == 0, ok.stdout + ok.stderr
    transcript = gpuproof(tmp_path / "ok-64", "verify-transcript", cid, "--gateway", live.base, "--log-key", real)
    assert transcript.returncode == 0, transcript.stdout + transcript.stderr
    # pinned now: a different key given later is a contradiction, said as one line naming the parameter
    contradicts = gpuproof(tmp_path / "ok-64", "log", "verify", "--gateway", live.base, "--log-key", stranger)
    assert contradicts.returncode == 2 and "--log-key" in contradicts.stderr, contradicts.stderr
    malformed = gpuproof(tmp_path / "fresh", "log", "verify", "--gateway", live.base, "--log-key", "not+a+key")
    assert malformed.returncode == 2 and "--log-key" in malformed.stderr and "Traceback" not in malformed.stderr
