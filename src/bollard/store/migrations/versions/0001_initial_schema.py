"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "nodes",
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("token_hash", sa.String(length=128), nullable=False),
        sa.Column("health", sa.String(length=20), nullable=False),
        sa.Column("scheduling", sa.String(length=20), nullable=False),
        sa.Column("connected", sa.Boolean(), nullable=False),
        sa.Column("vcpus", sa.Integer(), nullable=False),
        sa.Column("memory_mb", sa.Integer(), nullable=False),
        sa.Column("allocated_vcpus", sa.Integer(), nullable=False),
        sa.Column("allocated_memory_mb", sa.Integer(), nullable=False),
        sa.Column("driver", sa.String(length=40), nullable=True),
        sa.Column("agent_incarnation", sa.String(length=64), nullable=True),
        sa.Column("boot_id", sa.String(length=64), nullable=True),
        sa.Column("last_heartbeat", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_nodes")),
    )
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.create_index("ix_nodes_token_hash", ["token_hash"], unique=True)
    op.create_table(
        "settings",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_settings")),
    )
    op.create_table(
        "tasks",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("type", sa.String(length=40), nullable=False),
        sa.Column("vm_uuid", sa.String(length=36), nullable=True),
        sa.Column("vm_name", sa.String(length=63), nullable=True),
        sa.Column("node", sa.String(length=63), nullable=True),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tasks")),
    )
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.create_index("ix_tasks_state", ["state"], unique=False)
        batch_op.create_index("ix_tasks_vm_uuid", ["vm_uuid"], unique=False)

    op.create_table(
        "commands",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("node", sa.String(length=63), nullable=False),
        sa.Column("type", sa.String(length=40), nullable=False),
        sa.Column("args", sa.JSON(), nullable=False),
        sa.Column("vm_uuid", sa.String(length=36), nullable=True),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.String(length=36), nullable=True),
        sa.Column("state", sa.String(length=30), nullable=False),
        sa.Column("agent_state", sa.String(length=30), nullable=True),
        sa.Column("answer", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"], name=op.f("fk_commands_task_id_tasks")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_commands")),
    )
    with op.batch_alter_table("commands", schema=None) as batch_op:
        batch_op.create_index("ix_commands_node_state", ["node", "state"], unique=False)
        batch_op.create_index("ix_commands_task_id", ["task_id"], unique=False)
        batch_op.create_index("ix_commands_vm_uuid", ["vm_uuid"], unique=False)

    op.create_table(
        "vms",
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("node", sa.String(length=63), nullable=True),
        sa.Column("vcpus", sa.Integer(), nullable=False),
        sa.Column("memory_mb", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("vm_state", sa.String(length=20), nullable=False),
        sa.Column("task_state", sa.String(length=30), nullable=True),
        sa.Column("task_id", sa.String(length=36), nullable=True),
        sa.Column("desired_power", sa.String(length=20), nullable=False),
        sa.Column("observed_power", sa.String(length=20), nullable=False),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("observed_seq", sa.BigInteger(), nullable=False),
        sa.Column("fault", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["node"], ["nodes.name"], name=op.f("fk_vms_node_nodes")),
        sa.PrimaryKeyConstraint("uuid", name=op.f("pk_vms")),
        sa.UniqueConstraint("name", name=op.f("uq_vms_name")),
    )
    with op.batch_alter_table("vms", schema=None) as batch_op:
        batch_op.create_index("ix_vms_node", ["node"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("vms", schema=None) as batch_op:
        batch_op.drop_index("ix_vms_node")

    op.drop_table("vms")
    with op.batch_alter_table("commands", schema=None) as batch_op:
        batch_op.drop_index("ix_commands_vm_uuid")
        batch_op.drop_index("ix_commands_task_id")
        batch_op.drop_index("ix_commands_node_state")

    op.drop_table("commands")
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_index("ix_tasks_vm_uuid")
        batch_op.drop_index("ix_tasks_state")

    op.drop_table("tasks")
    op.drop_table("settings")
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.drop_index("ix_nodes_token_hash")
    op.drop_table("nodes")
