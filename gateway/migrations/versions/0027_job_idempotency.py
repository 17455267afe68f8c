"""jobs.idempotency_key: a create_job resent with the same Idempotency-Key gets the same job (issue 20)

Revision ID: 0027
Revises: 0026
Create Date: 2026-11-30
"""
import sqlalchemy as sa
from alembic import op

revision = '0027'
down_revision = '0026'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('idempotency_key', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('request_sha256', sa.String(length=64), nullable=True))
        batch_op.create_unique_constraint('uq_jobs_created_by_idempotency_key', ['created_by', 'idempotency_key'])


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_constraint('uq_jobs_created_by_idempotency_key', type_='unique')
        batch_op.drop_column('request_sha256')
        batch_op.drop_column('idempotency_key')
