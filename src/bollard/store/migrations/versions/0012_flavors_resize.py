"""flavors, migration records, the flavor a VM was given, request ids of tasks, volumes kept
for a resize's revert

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06

A VM created before flavors has none (``flavor`` NULL: its size was given by hand). Tasks
created before request ids have none (their actions are shown with ``req-<task id>``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "flavors",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(63), nullable=False, unique=True),
        sa.Column("vcpus", sa.Integer(), nullable=False),
        sa.Column("memory_mb", sa.Integer(), nullable=False),
        sa.Column("disk_mb", sa.BigInteger(), nullable=False),
        sa.Column("description", sa.String(200), nullable=True),
        sa.Column("properties", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "migrations",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("vm_uuid", sa.String(36), nullable=False),
        sa.Column("vm_name", sa.String(63), nullable=False),
        sa.Column("type", sa.String(20), nullable=False),
        sa.Column("source", sa.String(63), nullable=True),
        sa.Column("dest", sa.String(63), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("task_id", sa.String(36), nullable=True),
        sa.Column("old_flavor", sa.JSON(), nullable=True),
        sa.Column("new_flavor", sa.JSON(), nullable=True),
        sa.Column("source_hold", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_migrations_vm_uuid", "migrations", ["vm_uuid"])
    op.create_index("ix_migrations_status", "migrations", ["status"])
    with op.batch_alter_table("vms") as batch:
        batch.add_column(sa.Column("flavor", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("flavor_id", sa.String(36), nullable=True))
    op.create_index("ix_vms_flavor_id", "vms", ["flavor_id"])
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("request_id", sa.String(64), nullable=True))
    with op.batch_alter_table("volumes") as batch:
        batch.add_column(sa.Column("migration_id", sa.String(36), nullable=True))
    op.create_index("ix_volumes_migration_id", "volumes", ["migration_id"])


def downgrade() -> None:
    op.drop_index("ix_volumes_migration_id", "volumes")
    with op.batch_alter_table("volumes") as batch:
        batch.drop_column("migration_id")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("request_id")
    op.drop_index("ix_vms_flavor_id", "vms")
    with op.batch_alter_table("vms") as batch:
        batch.drop_column("flavor_id")
        batch.drop_column("flavor")
    op.drop_index("ix_migrations_status", "migrations")
    op.drop_index("ix_migrations_vm_uuid", "migrations")
    op.drop_table("migrations")
    op.drop_table("flavors")
