"""health, fencing and HA: node power settings, VM HA policy, leases

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("power_driver", sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column("power_address", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("power_secret", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("health_since", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("vms", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ha", sa.String(length=20), nullable=True))
        batch_op.add_column(
            sa.Column("ha_priority", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("autostart", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.create_table(
        "leases",
        sa.Column("name", sa.String(length=60), nullable=False),
        sa.Column("holder", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_leases")),
    )


def downgrade() -> None:
    op.drop_table("leases")
    with op.batch_alter_table("vms", schema=None) as batch_op:
        for column in ("autostart", "ha_priority", "ha"):
            batch_op.drop_column(column)
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        for column in ("health_since", "power_secret", "power_address", "power_driver"):
            batch_op.drop_column(column)
