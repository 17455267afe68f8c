"""validators' signed reads are answered once: their nonces are stored (issue 18)

Revision ID: 0014
Revises: 0012
Create Date: 2026-11-30
"""
import sqlalchemy as sa
from alembic import op

revision = '0014'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('validator_nonces',
                    sa.Column('validator_key', sa.String(length=64), nullable=False),
                    sa.Column('nonce', sa.String(length=64), nullable=False),
                    sa.Column('seen_at', sa.Float(), nullable=False),
                    sa.PrimaryKeyConstraint('validator_key', 'nonce'))
    with op.batch_alter_table('validator_nonces', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_validator_nonces_seen_at'), ['seen_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('validator_nonces', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_validator_nonces_seen_at'))
    op.drop_table('validator_nonces')
