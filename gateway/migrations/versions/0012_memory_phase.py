"""challenges keep spec v2's memory phase (issue 17): the plan, the walk's nonce and root with their times,
the lanes drawn and the opened lanes

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30
"""
import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None

COLUMNS = (
    ('memory_plan', sa.JSON()),
    ('walk_nonce', sa.LargeBinary(length=16)),
    ('nonce_sent_at', sa.Float()),
    ('walk_root', sa.LargeBinary(length=32)),
    ('walk_digest', sa.String(length=64)),
    ('walk_received_at', sa.Float()),
    ('walk_rtt_s', sa.Float()),
    ('walk_s', sa.Float()),
    ('lanes', sa.JSON()),
    ('lane_openings', sa.JSON()),
)


def upgrade() -> None:
    with op.batch_alter_table('challenges', schema=None) as batch_op:
        for name, kind in COLUMNS:
            batch_op.add_column(sa.Column(name, kind, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('challenges', schema=None) as batch_op:
        for name, _ in reversed(COLUMNS):
            batch_op.drop_column(name)
