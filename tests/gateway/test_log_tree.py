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
