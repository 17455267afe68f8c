"""tenancy (issue 18): API keys and jobs belong to a tenant; tenants register validators; jobs name them

Keys made before this revision belong to the tenant of their name; jobs to their creating key's tenant.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""
import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('tenant', sa.String(length=100), nullable=True))
    keys = sa.table('api_keys', sa.column('id', sa.String), sa.column('name', sa.String),
                    sa.column('tenant', sa.String))
    op.execute(keys.update().values(tenant=keys.c.name))
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.alter_column('tenant', existing_type=sa.String(length=100), nullable=False)
        batch_op.create_index(batch_op.f('ix_api_keys_tenant'), ['tenant'], unique=False)
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('tenant', sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column('validators', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('renter_salt', sa.String(length=32), nullable=True))
        batch_op.create_index(batch_op.f('ix_jobs_tenant'), ['tenant'], unique=False)
    jobs = sa.table('jobs', sa.column('created_by', sa.String), sa.column('tenant', sa.String))
    op.execute(jobs.update().values(tenant=sa.select(keys.c.tenant).where(keys.c.id == jobs.c.created_by)
                                    .scalar_subquery()))
    op.create_table(
        'validators',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('tenant', sa.String(length=100), nullable=False),
        sa.Column('public_key', sa.String(length=64), nullable=False),
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('created_at', sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('tenant', 'public_key'),
    )
    op.create_index(op.f('ix_validators_tenant'), 'validators', ['tenant'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_validators_tenant'), table_name='validators')
    op.drop_table('validators')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_jobs_tenant'))
        batch_op.drop_column('renter_salt')
        batch_op.drop_column('validators')
        batch_op.drop_column('tenant')
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_api_keys_tenant'))
        batch_op.drop_column('tenant')
