"""keyset indexes: each public list's order ends in the row's id, so a cursor page is a range scan (issue 18)

Revision ID: 0028
Revises: 0027
Create Date: 2026-11-30
"""
import sqlalchemy as sa
from alembic import op

revision = '0028'
down_revision = '0027'
branch_labels = None
depends_on = None

SCORE_COLUMNS = ('score', 'lower_bound', 'evidence')


def upgrade() -> None:
    op.create_index('ix_providers_created_at_id', 'providers', ['created_at', 'id'], unique=False)
    op.create_index('ix_providers_lower_name_id', 'providers', [sa.text('lower(name)'), 'id'], unique=False)
    op.create_index('ix_challenges_provider_judged_id', 'challenges', ['provider_id', 'judged_at', 'id'],
                    unique=False)
    for column in SCORE_COLUMNS:  # the composite index starts with the column: the single one is redundant
        op.drop_index(f'ix_provider_scores_{column}', table_name='provider_scores')
        op.create_index(f'ix_provider_scores_{column}_id', 'provider_scores', [column, 'provider_id'], unique=False)


def downgrade() -> None:
    for column in SCORE_COLUMNS:
        op.drop_index(f'ix_provider_scores_{column}_id', table_name='provider_scores')
        op.create_index(f'ix_provider_scores_{column}', 'provider_scores', [column], unique=False)
    op.drop_index('ix_challenges_provider_judged_id', table_name='challenges')
    op.drop_index('ix_providers_lower_name_id', table_name='providers')
    op.drop_index('ix_providers_created_at_id', table_name='providers')
