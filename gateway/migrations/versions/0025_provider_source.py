"""providers.source: the address a provider registered from, for new devices' per-source share (issue 18)

Revision ID: 0025
Revises: 0020
Create Date: 2026-11-30
"""
import sqlalchemy as sa
from alembic import op

revision = '0025'
down_revision = '0020'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('providers') as batch:
        batch.add_column(sa.Column('source', sa.String(length=64), nullable=True))
        batch.create_index('ix_providers_source', ['source'])


def downgrade() -> None:
    with op.batch_alter_table('providers') as batch:
        batch.drop_index('ix_providers_source')
        batch.drop_column('source')
