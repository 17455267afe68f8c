"""The alembic migrations build exactly the schema the models describe, and go down and up again."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from gpuproof.gateway import migrate
from gpuproof.gateway.models import Base
from sqlalchemy import create_engine, text


def schema_differences(url: str) -> list:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()


def test_migrations_match_the_models_and_downgrade_cleanly(database_url):
    migrate.upgrade(database_url)
    assert schema_differences(database_url) == []
    config = migrate.alembic_config(database_url)
    command.downgrade(config, "base")
    command.upgrade(config, "head")
    assert schema_differences(database_url) == []


def test_a_new_sqlite_database_is_put_in_wal_mode_once(tmp_path):
    import sqlite3

    from gpuproof.gateway.db import Database

    path = tmp_path / "fresh" / "gateway.db"
    db = Database(f"sqlite:///{path}")
    migrate.upgrade(db.url)
    with db.writer() as s, db.reader() as r:  # both engines' connections work on it
        s.execute(Base.metadata.tables["providers"].select()).all()
        r.execute(Base.metadata.tables["providers"].select()).all()
    db.dispose()
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_challenges_stored_before_spec_v2_are_gpuproof_1_after_the_upgrade(tmp_path):
    """Migration 0011 names the spec of every stored challenge: all of them were issued in gpuproof/1, and
    are judged (and their transcripts re-checked) under it."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    config = migrate.alembic_config(url)
    command.upgrade(config, "0009")
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO challenges (id, provider_id, device_id, device_model, profile, seed, m, n, k, rounds,"
                " spot_checks, issued_at, expected_s, fast_s, slow_s, deadline_s, state) VALUES (:id, 'p', 1,"
                " 'cpu-reference', 'cpu-reference', :seed, 16, 256, 64, 1, 32, 0, 1, 0, 2, 10, 'judged')"),
                {"id": "ab" * 16, "seed": bytes(32)})
        command.upgrade(config, "head")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT spec FROM challenges")).scalar_one() == "gpuproof/1"
    finally:
        engine.dispose()


def test_providers_registered_before_0018_get_a_stale_prior_score_the_sweep_then_recomputes(tmp_path):
    """Migration 0018 gives every stored provider a provider_scores row (the prior's figures, computed at 0:
    the stalest of all), so the listings that filter by it show them at once and the sweep fixes them first."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    config = migrate.alembic_config(url)
    command.upgrade(config, "0011")
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO providers (id, public_key, name, created_at) VALUES ('p1', :k, 'old', 0)"),
                         {"k": bytes(32)})
        command.upgrade(config, "head")
        with engine.connect() as conn:
            row = conn.execute(text("SELECT score, lower_bound, evidence, status, computed_at FROM provider_scores"
                                    " WHERE provider_id = 'p1'")).one()
    finally:
        engine.dispose()
    from gpuproof.verifier.trust import score

    prior = score([], 0.0)  # the independent figure: Beta(1, 1)'s mean and 5 % quantile
    assert row == (prior.score, pytest.approx(prior.lower_bound, abs=1e-12), 0, prior.status, 0.0)


def test_entries_logged_before_0019_get_their_subtree_hashes(tmp_path):
    """Migration 0019 stores the subtree hashes of the entries already logged: heads and proofs read from
    them equal the in-memory tree's over the stored leaf hashes, and appends go on from there."""
    import hashlib

    from gpuproof.gateway import translog
    from gpuproof.gateway.db import Database
    from gpuproof.kernels import merkle

    url = f"sqlite:///{tmp_path / 'old.db'}"
    config = migrate.alembic_config(url)
    command.upgrade(config, "0018")
    engine = create_engine(url)
    leaves = [merkle.leaf_hash(hashlib.sha256(bytes([i])).digest()) for i in range(13)]
    try:
        with engine.begin() as conn:
            for i, leaf in enumerate(leaves):
                conn.execute(text("INSERT INTO log_entries (idx, kind, body, leaf_hash, created_at) "
                                  "VALUES (:i, 'test', '{}', :leaf, 0)"), {"i": i, "leaf": leaf})
            conn.execute(text("UPDATE log_head SET size = 13"))
        command.upgrade(config, "head")
    finally:
        engine.dispose()
    db = Database(url)
    try:
        with db.writer() as session:
            translog.append(session, "test", {"n": 13}, 1.0)  # completes subtrees of 2 and 4 (and 8: no)
            session.commit()
        with db.reader() as session:
            body = translog.entries(session, 13, 14)[0]["leaf_hash"]
            want = merkle.MerkleTree(b"".join(leaves) + bytes.fromhex(body))
            for size in range(1, 15):
                assert translog.tree(session, size).root == merkle.MerkleTree(want.level(0)[:32 * size]).root
            assert translog.tree(session).inclusion_proof(5) == want.inclusion_proof(5)
    finally:
        db.dispose()
