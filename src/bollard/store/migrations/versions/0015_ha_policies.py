"""HA policies: node groups with priorities, affinity rules, a VM's HA hold and its restart
and relocate limits and counts, per-node maintenance and a node's shutdown policy

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ha_groups",
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("restricted", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("nofailback", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("description", sa.Text(), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "ha_group_nodes",
        sa.Column(
            "group_name",
            sa.String(63),
            sa.ForeignKey("ha_groups.name", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("node", sa.String(63), primary_key=True),
        sa.Column("priority", sa.Integer(), nullable=False, server_default="0"),
    )
    op.create_table(
        "affinity_rules",
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("strict", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("description", sa.Text(), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "affinity_rule_vms",
        sa.Column(
            "rule",
            sa.String(63),
            sa.ForeignKey("affinity_rules.name", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("vm_uuid", sa.String(36), primary_key=True),
    )
    op.create_index("ix_affinity_rule_vms_vm_uuid", "affinity_rule_vms", ["vm_uuid"])
    with op.batch_alter_table("vms") as batch:
        batch.add_column(sa.Column("ha_group", sa.String(63), nullable=True))
        batch.add_column(sa.Column("ha_hold", sa.String(20), nullable=True))
        batch.add_column(sa.Column("max_restart", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("max_relocate", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("ha_restarts", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(
            sa.Column("ha_relocates", sa.Integer(), nullable=False, server_default="0")
        )
    op.create_index("ix_vms_ha_group", "vms", ["ha_group"])
    # (Plain ADD COLUMNs, not a batch: on SQLite a batch would copy `nodes` anew, which the
    # foreign keys of the rows that name a node refuse.)
    op.add_column(
        "nodes", sa.Column("maintenance", sa.Boolean(), nullable=False, server_default=sa.false())
    )
    op.add_column("nodes", sa.Column("shutdown_policy", sa.String(20), nullable=True))
    op.add_column("nodes", sa.Column("shutdown_kind", sa.String(20), nullable=True))
    op.add_column("nodes", sa.Column("shutdown_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        for column in ("shutdown_at", "shutdown_kind", "shutdown_policy", "maintenance"):
            batch.drop_column(column)
    op.drop_index("ix_vms_ha_group", "vms")
    with op.batch_alter_table("vms") as batch:
        for column in (
            "ha_relocates", "ha_restarts", "max_relocate", "max_restart", "ha_hold", "ha_group"
        ):  # fmt: skip
            batch.drop_column(column)
    op.drop_index("ix_affinity_rule_vms_vm_uuid", "affinity_rule_vms")
    op.drop_table("affinity_rule_vms")
    op.drop_table("affinity_rules")
    op.drop_table("ha_group_nodes")
    op.drop_table("ha_groups")
