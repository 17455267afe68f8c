"""The alembic migrations build exactly the schema the models describe, and go down and up again."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from gpuproof.gateway import migrate
from gpuproof.gateway.models import Base
from sqlalchemy import create_engine


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
