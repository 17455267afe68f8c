"""challenges name their spec (issue 17: gpuproof/2); every challenge stored before is gpuproof/1

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30
"""
import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('challenges', schema=None) as batch_op:
        batch_op.add_column(sa.Column('spec', sa.String(length=16), nullable=True))
    challenges = sa.table('challenges', sa.column('spec', sa.String))
    op.execute(challenges.update().values(spec='gpuproof/1'))
    with op.batch_alter_table('challenges', schema=None) as batch_op:
        batch_op.alter_column('spec', existing_type=sa.String(length=16), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table('challenges', schema=None) as batch_op:
        batch_op.drop_column('spec')
