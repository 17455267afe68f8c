"""training proofs: checkpoint commitments, segment audits, job training state

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""
import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('training_state', sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column('closed_at', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('training_flags', sa.JSON(), nullable=True))
    op.create_table('training_commitments',
    sa.Column('job_id', sa.String(length=32), nullable=False),
    sa.Column('step', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('root', sa.LargeBinary(length=32), nullable=False),
    sa.Column('batch_hash', sa.LargeBinary(length=32), nullable=False),
    sa.Column('prev_hash', sa.LargeBinary(length=32), nullable=False),
    sa.Column('hash', sa.LargeBinary(length=32), nullable=False),
    sa.Column('manifest', sa.JSON(), nullable=False),
    sa.Column('received_at', sa.Float(), nullable=False),
    sa.Column('request', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], ),
    sa.PrimaryKeyConstraint('job_id', 'step')
    )
    op.create_table('segment_audits',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('job_id', sa.String(length=32), nullable=False),
    sa.Column('provider_id', sa.String(length=32), nullable=False),
    sa.Column('start_step', sa.BigInteger(), nullable=False),
    sa.Column('end_step', sa.BigInteger(), nullable=False),
    sa.Column('chunks', sa.JSON(), nullable=False),
    sa.Column('drawn_at', sa.Float(), nullable=False),
    sa.Column('deadline_at', sa.Float(), nullable=False),
    sa.Column('state', sa.String(length=12), nullable=False),
    sa.Column('upload_sha256', sa.String(length=64), nullable=True),
    sa.Column('upload_bytes', sa.BigInteger(), nullable=True),
    sa.Column('batches', sa.JSON(), nullable=True),
    sa.Column('opened', sa.JSON(), nullable=True),
    sa.Column('verdict', sa.JSON(), nullable=True),
    sa.Column('outcome', sa.String(length=8), nullable=True),
    sa.Column('judged_at', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], ),
    sa.ForeignKeyConstraint(['provider_id'], ['providers.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('segment_audits', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_segment_audits_job_id'), ['job_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_segment_audits_provider_id'), ['provider_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_segment_audits_state'), ['state'], unique=False)
        batch_op.create_index(batch_op.f('ix_segment_audits_judged_at'), ['judged_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('segment_audits', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_segment_audits_judged_at'))
        batch_op.drop_index(batch_op.f('ix_segment_audits_state'))
        batch_op.drop_index(batch_op.f('ix_segment_audits_provider_id'))
        batch_op.drop_index(batch_op.f('ix_segment_audits_job_id'))
    op.drop_table('segment_audits')
    op.drop_table('training_commitments')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('training_flags')
        batch_op.drop_column('closed_at')
        batch_op.drop_column('training_state')
