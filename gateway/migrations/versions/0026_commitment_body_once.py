"""training_commitments.manifest nullable: the manifest is read from the signed body, stored once (issue 18)

Revision ID: 0026
Revises: 0025
Create Date: 2026-11-30
"""
import sqlalchemy as sa
from alembic import op

revision = '0026'
down_revision = '0025'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('training_commitments') as batch:
        batch.alter_column('manifest', existing_type=sa.JSON(), nullable=True)


def downgrade() -> None:
    with op.batch_alter_table('training_commitments') as batch:
        batch.alter_column('manifest', existing_type=sa.JSON(), nullable=False)
