"""durable tasks (steps), events, migration fields of VMs, node load

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("load", sa.Float(), nullable=True))
    with op.batch_alter_table("vms", schema=None) as batch_op:
        batch_op.add_column(sa.Column("previous_node", sa.String(length=63), nullable=True))
        batch_op.add_column(
            sa.Column(
                "migration_method", sa.String(length=20), nullable=False, server_default="default"
            )
        )
        batch_op.add_column(sa.Column("node_limit", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("node_selector", sa.String(length=20), nullable=True))
        batch_op.add_column(
            sa.Column("on_lost", sa.String(length=20), nullable=False, server_default="none")
        )
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("result", sa.JSON(), nullable=True))
        batch_op.add_column(
            sa.Column("cancel_requested", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.create_table(
        "task_steps",
        sa.Column("task_id", sa.String(length=36), nullable=False),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=60), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("commands", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("undo_started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("undo_finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("undo_error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name=op.f("fk_task_steps_task_id_tasks"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("task_id", "idx", name=op.f("pk_task_steps")),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=60), nullable=False),
        sa.Column("vm_uuid", sa.String(length=36), nullable=True),
        sa.Column("vm_name", sa.String(length=63), nullable=True),
        sa.Column("node", sa.String(length=63), nullable=True),
        sa.Column("task_id", sa.String(length=36), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index("ix_events_task_id", ["task_id"], unique=False)
        batch_op.create_index("ix_events_vm_uuid", ["vm_uuid"], unique=False)


def downgrade() -> None:
    op.drop_table("events")
    op.drop_table("task_steps")
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_column("cancel_requested")
        batch_op.drop_column("result")
    with op.batch_alter_table("vms", schema=None) as batch_op:
        for column in (
            "on_lost",
            "node_selector",
            "node_limit",
            "migration_method",
            "previous_node",
        ):
            batch_op.drop_column(column)
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.drop_column("load")
