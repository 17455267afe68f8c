"""devices' verified class stored: ?model= listings read it instead of every recent pass (issue 18)

Revision ID: 0029
Revises: 0028
Create Date: 2026-12-01
"""
import sqlalchemy as sa
from alembic import op

revision = '0029'
down_revision = '0028'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Left null: the maintenance sweep works out every device's class (those never worked out first), as it
    # needs the gateway's profiles, which a migration does not have.
    with op.batch_alter_table('devices') as batch:
        batch.add_column(sa.Column('verified_class', sa.String(length=40), nullable=True))
        batch.add_column(sa.Column('verified_until', sa.Float(), nullable=True))
    op.create_index('ix_devices_verified_class_until_provider', 'devices',
                    ['verified_class', 'verified_until', 'provider_id'], unique=False)
    op.create_index(op.f('ix_devices_verified_until'), 'devices', ['verified_until'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_devices_verified_until'), table_name='devices')
    op.drop_index('ix_devices_verified_class_until_provider', table_name='devices')
    with op.batch_alter_table('devices') as batch:
        batch.drop_column('verified_until')
        batch.drop_column('verified_class')
