"""hidden VMs: a cell's copy of a VM that is moving between cells

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06

While a VM moves from one cell to another, each of the two cells holds a record of it, and
only one is visible: the other is `hidden` (left out of lists, counts and quotas, still
holding its node's resources and its MACs). A cell may override how much a VM moving
between cells prefers the nodes of its own cell (`weight_multiplier`; NULL: the setting).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("vms") as batch:
        batch.add_column(
            sa.Column("hidden", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("cells") as batch:
        batch.add_column(sa.Column("weight_multiplier", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("cells") as batch:
        batch.drop_column("weight_multiplier")
    with op.batch_alter_table("vms") as batch:
        batch.drop_column("hidden")
