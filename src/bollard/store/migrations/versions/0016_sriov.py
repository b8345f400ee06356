"""SR-IOV: each node's physical functions and their virtual functions, with the VM NIC that
holds each VF

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07

Both tables are filled from the agents' reports; a database upgraded from 0015 has them
empty until each agent reports again (the next connect).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sriov_pfs",
        sa.Column(
            "node",
            sa.String(63),
            sa.ForeignKey("nodes.name", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("device", sa.String(15), primary_key=True),
        sa.Column("physnet", sa.String(63), nullable=False),
        sa.Column("pci", sa.String(16), nullable=False),
        sa.Column("mtu", sa.Integer(), nullable=True),
        sa.Column("vfs_total", sa.Integer(), nullable=False),
        sa.Column("vfs", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_sriov_pfs_physnet", "sriov_pfs", ["physnet"])
    op.create_table(
        "sriov_vfs",
        sa.Column("node", sa.String(63), primary_key=True),
        sa.Column("pf", sa.String(15), primary_key=True),
        sa.Column("idx", sa.Integer(), primary_key=True),
        sa.Column("pci", sa.String(16), nullable=False),
        sa.Column("netdev", sa.String(15), nullable=True),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("applied", sa.JSON(), nullable=False),
        sa.Column("host_used_by", sa.String(36), nullable=True),
        sa.Column("used_by", sa.String(36), nullable=True),
        sa.Column("mac", sa.String(17), nullable=True),
        sa.Column("task_id", sa.String(36), nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["node", "pf"],
            ["sriov_pfs.node", "sriov_pfs.device"],
            name=op.f("fk_sriov_vfs_node_sriov_pfs"),
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("node", "pci", name=op.f("uq_sriov_vfs_node_pci")),
        sa.UniqueConstraint("node", "mac", name=op.f("uq_sriov_vfs_node_mac")),
    )
    op.create_index("ix_sriov_vfs_used_by", "sriov_vfs", ["used_by"])


def downgrade() -> None:
    op.drop_index("ix_sriov_vfs_used_by", "sriov_vfs")
    op.drop_table("sriov_vfs")
    op.drop_index("ix_sriov_pfs_physnet", "sriov_pfs")
    op.drop_table("sriov_pfs")
