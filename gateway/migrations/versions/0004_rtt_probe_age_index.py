"""rtt probes: an index on sent_at, for the maintenance sweep that deletes old probes

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('rtt_probes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_rtt_probes_sent_at'), ['sent_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('rtt_probes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_rtt_probes_sent_at'))
