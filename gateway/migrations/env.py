"""Alembic environment: the URL comes from the caller (gateway.migrate) or GPUPROOF_DATABASE_URL."""

from __future__ import annotations

from alembic import context
from gpuproof.gateway.models import Base
from gpuproof.gateway.settings import Settings
from sqlalchemy import create_engine

config = context.config
url = config.get_main_option("sqlalchemy.url") or Settings().sqlalchemy_url()


def run_migrations_offline() -> None:
    context.configure(url=url, target_metadata=Base.metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
