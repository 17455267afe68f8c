"""The alembic migrations build exactly the schema the models describe, and go down and up again."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from gateway import migrate
from gateway.models import Base


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
