"""log entries about a challenge carry its id, to find them by it (issue 19: entries that bind the evidence)

Revision ID: 0008
Revises: 0006
Create Date: 2026-12-01
"""
import json

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('log_entries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('challenge_id', sa.String(length=32), nullable=True))
        batch_op.create_index(batch_op.f('ix_log_entries_challenge_id'), ['challenge_id'], unique=False)
    # entries logged before: verdicts name their challenge in the body (the body itself is never changed)
    entries = sa.table('log_entries', sa.column('idx', sa.Integer), sa.column('kind', sa.String),
                       sa.column('body', sa.Text), sa.column('challenge_id', sa.String))
    conn = op.get_bind()
    rows = conn.execute(sa.select(entries.c.idx, entries.c.body).where(entries.c.kind == 'verdict')).all()
    for idx, body in rows:
        challenge_id = json.loads(body).get('challenge_id')
        if isinstance(challenge_id, str):
            conn.execute(entries.update().where(entries.c.idx == idx).values(challenge_id=challenge_id))


def downgrade() -> None:
    with op.batch_alter_table('log_entries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_log_entries_challenge_id'))
        batch_op.drop_column('challenge_id')
