"""cells, and the host and VM mappings of the API database

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06

The API server in front of cells (`bollard api`) keeps these in its own database; a cell's
database (and a server without cells) has them empty.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cells",
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("url", sa.String(500), nullable=False),
        sa.Column("token_sealed", sa.Text(), nullable=False),
        sa.Column("ca_pem", sa.Text(), nullable=True),
        sa.Column("disabled", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "host_mappings",
        sa.Column("node", sa.String(63), primary_key=True),
        sa.Column("cell", sa.String(63), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_host_mappings_cell", "host_mappings", ["cell", "node"])
    op.create_table(
        "vm_mappings",
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("uuid", sa.String(36), nullable=True),
        sa.Column("cell", sa.String(63), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_vm_mappings_cell", "vm_mappings", ["cell", "name"])


def downgrade() -> None:
    op.drop_index("ix_vm_mappings_cell", "vm_mappings")
    op.drop_table("vm_mappings")
    op.drop_index("ix_host_mappings_cell", "host_mappings")
    op.drop_table("host_mappings")
    op.drop_table("cells")
