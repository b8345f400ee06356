"""state reconciliation: host inventories, report host time

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("report_host_time", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("inventory_incarnation", sa.String(length=64), nullable=True))
    op.create_table(
        "host_vms",
        sa.Column("node", sa.String(length=63), nullable=False),
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("power", sa.String(length=20), nullable=False),
        sa.Column("vcpus", sa.Integer(), nullable=False),
        sa.Column("memory_mb", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["node"], ["nodes.name"], name=op.f("fk_host_vms_node_nodes"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("node", "uuid", name=op.f("pk_host_vms")),
    )
    op.create_index("ix_host_vms_uuid", "host_vms", ["uuid"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_host_vms_uuid", table_name="host_vms")
    op.drop_table("host_vms")
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.drop_column("inventory_incarnation")
        batch_op.drop_column("report_host_time")
