"""The log's tree is read from stored subtree hashes (gateway/translog.py, models.LogNode): its heads and
proofs equal those of the in-memory RFC 6962 tree over the same leaves (kernels/merkle.py, checked against
RFC 6962's vectors in tests/kernels/test_merkle.py) at every size, and cost O(log^2 size) row reads instead
of every leaf (issue 18: at 1M entries each head and proof took 2.4-3.7 s)."""

from __future__ import annotations

import math
import random

from gpuproof.gateway import migrate, translog
from gpuproof.gateway.db import Database
from gpuproof.kernels import merkle
from gpuproof.verifier import notes, signatures
from sqlalchemy import event

ENTRIES = 300


def _logged(database_url: str, count: int) -> tuple[Database, list[bytes]]:
    migrate.upgrade(database_url)
    db = Database(database_url)
    leaves = []
    rng = random.Random(7)
    done = 0
    while done < count:  # transactions of 1 to 5 appends, as handlers make them
        with db.writer() as session:
            for _ in range(min(rng.randint(1, 5), count - done)):
                translog.append(session, "test", {"n": done}, float(done))
                done += 1
            session.commit()
    with db.reader() as session:
        leaves = [e["leaf_hash"] for e in translog.entries(session, 0, count)]
    return db, [bytes.fromhex(h) for h in leaves]


def test_heads_and_proofs_from_stored_subtrees_equal_the_whole_trees(database_url):
    db, leaves = _logged(database_url, ENTRIES)
    rng = random.Random(1)
    try:
        with db.reader() as session:
            for size in range(1, ENTRIES + 1):
                want = merkle.MerkleTree(b"".join(leaves[:size]))
                stored = translog.tree(session, size)
                assert stored.root == want.root, size
                for index in {0, size - 1, rng.randrange(size)}:
                    proof = stored.inclusion_proof(index)
                    assert proof == want.inclusion_proof(index), (index, size)
                    merkle.verify_inclusion(index, size, leaves[index], proof, want.root)
                old = rng.randint(0, size)
                assert stored.consistency_proof(old) == want.consistency_proof(old), (old, size)
    finally:
        db.dispose()


def test_a_head_and_a_proof_read_a_logarithmic_number_of_rows(database_url):
    """Counted, not timed: a head (root), an inclusion proof and a consistency proof run point lookups of
    stored hashes, as many as log2(size) grows (20 at 300 entries), never a scan of the leaves."""
    db, _ = _logged(database_url, ENTRIES)
    statements: list[str] = []
    event.listen(db.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    try:
        with db.reader() as session:
            for size in (3, 64, 255, ENTRIES):
                statements.clear()
                tree = translog.tree(session, size)
                read = (tree.root, tree.inclusion_proof(size // 3), tree.consistency_proof(size // 2))
                assert read[0] and len(read[1]) == merkle.inclusion_proof_length(size // 3, size)
                # each a point lookup of one stored hash (before: one statement reading every leaf below size)
                assert all("idx <" not in s and "idx >" not in s for s in statements), statements
                assert len(statements) <= 3 * math.ceil(math.log2(size + 1)) + 2, (size, len(statements))
    finally:
        db.dispose()


def test_the_read_cache_serves_the_same_heads_and_proofs_and_reads_only_the_size_again(database_url):
    """translog.LogCache (what the public reads pass): the same roots, proofs and checkpoints as the in-memory
    tree, while the log grows; once a head has been read, the next reads of heads and proofs of the same
    sizes run one statement (the size), not the stored hashes again."""
    db, leaves = _logged(database_url, 64)
    cache = translog.LogCache()
    key = signatures.new_private_key()
    statements: list[str] = []
    event.listen(db.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    try:
        for grown in (0, 7):
            with db.writer() as session:
                for n in range(grown):
                    translog.append(session, "test", {"n": 64 + n}, float(n))
                session.commit()
            with db.reader() as session:
                size = translog.size(session)
                leaves = [bytes.fromhex(e["leaf_hash"]) for e in translog.entries(session, 0, size)]
                want = merkle.MerkleTree(b"".join(leaves))
                for _ in range(2):
                    statements.clear()
                    head = translog.signed_head(session, key, 1.0, "example/log", cache)
                    tree = translog.tree(session, size, cache)
                    assert bytes.fromhex(head["root"]) == want.root and head["size"] == size
                    assert head["checkpoint"] == notes.Checkpoint("example/log", size, want.root).sign(key)
                    assert tree.inclusion_proof(size - 1) == want.inclusion_proof(size - 1)
                    assert tree.consistency_proof(5) == want.consistency_proof(5)
                statements_again = [s for s in statements if "log_head" not in s]
                assert statements_again == [], statements_again
    finally:
        db.dispose()


def test_a_gateway_without_the_cache_reads_what_the_database_holds(database_url):
    """GPUPROOF_LOG_CACHE_HASHES=0 (tests/gateway/test_log_evidence.py edits rows under a running gateway)."""
    db, leaves = _logged(database_url, 9)
    cache = translog.LogCache(max_hashes=0)
    try:
        with db.reader() as session:
            assert translog.tree(session, 9, cache).root == merkle.MerkleTree(b"".join(leaves)).root
        assert cache.hashes == {} and cache.checkpoints == {}
    finally:
        db.dispose()
