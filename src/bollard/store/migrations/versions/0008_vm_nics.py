"""vms: network interfaces (MAC, network or bridge, model), fixed at creation; macs: every
NIC's MAC address, unique across VMs

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The server default gives existing VMs no NICs (and keeps inserts by a server not yet
    # upgraded working).
    with op.batch_alter_table("vms", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("nics", sa.JSON(), nullable=False, server_default=sa.text("'[]'"))
        )
    op.create_table(
        "macs",
        sa.Column("mac", sa.String(length=17), nullable=False),
        sa.Column("vm_uuid", sa.String(length=36), nullable=False),
        sa.PrimaryKeyConstraint("mac", name=op.f("pk_macs")),
    )
    op.create_index("ix_macs_vm_uuid", "macs", ["vm_uuid"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_macs_vm_uuid", table_name="macs")
    op.drop_table("macs")
    with op.batch_alter_table("vms", schema=None) as batch_op:
        batch_op.drop_column("nics")
