"""log_nodes: the hashes of the log tree's complete subtrees, so heads and proofs read O(log^2 n) rows (issue 18)

Revision ID: 0019
Revises: 0018
Create Date: 2026-11-30
"""
import sqlalchemy as sa
from alembic import op
from gpuproof.kernels import merkle

revision = '0019'
down_revision = '0018'
branch_labels = None
depends_on = None

BATCH = 10_000


def upgrade() -> None:
    op.create_table('log_nodes',
                    sa.Column('height', sa.Integer(), autoincrement=False, nullable=False),
                    sa.Column('idx', sa.BigInteger(), autoincrement=False, nullable=False),
                    sa.Column('hash', sa.LargeBinary(length=32), nullable=False),
                    sa.PrimaryKeyConstraint('height', 'idx'))
    # the nodes of the entries already logged: the tree over their leaf hashes, built once here
    conn = op.get_bind()
    leaves = b"".join(conn.execute(sa.text("SELECT leaf_hash FROM log_entries ORDER BY idx")).scalars())
    nodes = sa.table('log_nodes', sa.column('height', sa.Integer), sa.column('idx', sa.BigInteger),
                     sa.column('hash', sa.LargeBinary))
    rows = [{"height": h, "idx": i, "hash": x} for h, i, x in merkle.MerkleTree(leaves).perfect_nodes()]
    for start in range(0, len(rows), BATCH):
        op.bulk_insert(nodes, rows[start:start + BATCH])


def downgrade() -> None:
    op.drop_table('log_nodes')
