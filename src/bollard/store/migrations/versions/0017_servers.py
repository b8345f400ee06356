"""Several servers: each server process's row, a fencing token on leases, messages between
servers, the server holding a node's agent session and the server running a task

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-08

Existing leases get token 0 (the next holder to take one gets 1); nodes and tasks get no
server (every server starts anew, and no agent is connected before it does).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "servers",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("url", sa.String(255), nullable=False),
        sa.Column("version", sa.String(40), nullable=False),
        sa.Column("protocols", sa.JSON(), nullable=False),
        sa.Column("schema_revision", sa.String(20), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("renewed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("state", sa.String(20), nullable=False),
    )
    op.create_index("ix_servers_state", "servers", ["state"])
    op.create_table(
        "relay",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("to_server", sa.String(36), nullable=False),
        sa.Column("from_server", sa.String(36), nullable=False),
        sa.Column("node", sa.String(63), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_relay_to_server", "relay", ["to_server"])
    # (Plain ADD COLUMNs, not batches: on SQLite a batch would copy `nodes` and `tasks`
    # anew, which the foreign keys of the rows that name them refuse.)
    op.add_column("leases", sa.Column("token", sa.BigInteger(), nullable=False, server_default="0"))
    op.add_column("leases", sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("nodes", sa.Column("server_id", sa.String(36), nullable=True))
    op.add_column("tasks", sa.Column("owner", sa.String(36), nullable=True))


def downgrade() -> None:
    # (Plain DROP COLUMNs for the same reason: SQLite has them since 3.35.)
    op.drop_column("tasks", "owner")
    op.drop_column("nodes", "server_id")
    with op.batch_alter_table("leases") as batch:
        batch.drop_column("acquired_at")
        batch.drop_column("token")
    op.drop_index("ix_relay_to_server", "relay")
    op.drop_table("relay")
    op.drop_index("ix_servers_state", "servers")
    op.drop_table("servers")
