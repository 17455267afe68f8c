"""provider_scores: each provider's trust in indexed columns, so public listings cost O(page) (issue 18)

Revision ID: 0018
Revises: 0014
Create Date: 2026-11-30
"""
import sqlalchemy as sa
from alembic import op

revision = '0018'
down_revision = '0014'
branch_labels = None
depends_on = None

# a provider without evidence: Beta(1, 1)'s mean and 5 % quantile. Rows start stale (computed_at 0): the
# maintenance sweep recomputes the stalest first, so providers registered before this migration get their
# real figures within a few sweeps.
PRIOR_SCORE, PRIOR_LOWER_BOUND = 0.5, 0.05


def upgrade() -> None:
    op.create_table('provider_scores',
                    sa.Column('provider_id', sa.String(length=32), nullable=False),
                    sa.Column('score', sa.Float(), nullable=False),
                    sa.Column('lower_bound', sa.Float(), nullable=False),
                    sa.Column('evidence', sa.Integer(), nullable=False),
                    sa.Column('status', sa.String(length=16), nullable=False),
                    sa.Column('computed_at', sa.Float(), nullable=False),
                    sa.ForeignKeyConstraint(['provider_id'], ['providers.id'], ),
                    sa.PrimaryKeyConstraint('provider_id'))
    for column in ('score', 'lower_bound', 'evidence', 'computed_at'):
        op.create_index(op.f(f'ix_provider_scores_{column}'), 'provider_scores', [column], unique=False)
    op.execute(sa.text("INSERT INTO provider_scores (provider_id, score, lower_bound, evidence, status, "
                       "computed_at) SELECT id, :score, :lower, 0, 'unproven', 0 FROM providers")
               .bindparams(score=PRIOR_SCORE, lower=PRIOR_LOWER_BOUND))


def downgrade() -> None:
    for column in ('score', 'lower_bound', 'evidence', 'computed_at'):
        op.drop_index(op.f(f'ix_provider_scores_{column}'), table_name='provider_scores')
    op.drop_table('provider_scores')
