"""webhook_endpoints.previous_secret, previous_until: a rotated secret signs deliveries for an overlap (issue 19)

Revision ID: 0020
Revises: 0019
Create Date: 2026-11-30
"""
import sqlalchemy as sa
from alembic import op

revision = '0020'
down_revision = '0019'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('webhook_endpoints') as batch:
        batch.add_column(sa.Column('previous_secret', sa.String(length=100), nullable=True))
        batch.add_column(sa.Column('previous_until', sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('webhook_endpoints') as batch:
        batch.drop_column('previous_until')
        batch.drop_column('previous_secret')
