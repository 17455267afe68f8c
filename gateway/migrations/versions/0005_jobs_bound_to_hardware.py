"""jobs name the devices they pay for and the class paid for (issue 16)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""
import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('devices', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('paid_class', sa.String(length=40), nullable=True))
    with op.batch_alter_table('challenges', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_challenges_device_id'), ['device_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('challenges', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_challenges_device_id'))
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('paid_class')
        batch_op.drop_column('devices')
