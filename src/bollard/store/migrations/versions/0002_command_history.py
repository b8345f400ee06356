"""command history: every transition of a command, for `bollard command show`

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "command_history",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("command_id", sa.String(length=36), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("from_state", sa.String(length=30), nullable=True),
        sa.Column("to_state", sa.String(length=30), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["command_id"],
            ["commands.id"],
            name=op.f("fk_command_history_command_id_commands"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_command_history")),
    )
    with op.batch_alter_table("command_history", schema=None) as batch_op:
        batch_op.create_index("ix_command_history_command_id", ["command_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("command_history", schema=None) as batch_op:
        batch_op.drop_index("ix_command_history_command_id")
    op.drop_table("command_history")
