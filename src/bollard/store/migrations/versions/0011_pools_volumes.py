"""storage pools and volumes; every VM disk becomes a volume of the pool `local`

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06

The disks VMs had (``vms.disks``: sizes in device order, each a file
``<vm uuid>-vd<x>.qcow2`` in its host's default storage directory) become volumes of the
pool ``local`` (path NULL: each host's default directory, so the files stay where they are),
attached to their VM at their device, on the VM's node, deleted with the VM. Then the column
goes: a VM's disks are the volumes attached to it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_DEVICES = "abcdefghijklmnop"


def upgrade() -> None:
    op.create_table(
        "pools",
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("type", sa.String(10), nullable=False),
        sa.Column("path", sa.String(1024), nullable=True),
        sa.Column("nodes", sa.JSON(), nullable=True),
        sa.Column("description", sa.String(200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "pool_hosts",
        sa.Column(
            "pool", sa.String(63), sa.ForeignKey("pools.name", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column(
            "node", sa.String(63), sa.ForeignKey("nodes.name", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("capacity_mb", sa.BigInteger(), nullable=True),
        sa.Column("free_mb", sa.BigInteger(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
    )  # fmt: skip
    volumes = op.create_table(
        "volumes",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(63), nullable=False, unique=True),
        sa.Column("pool", sa.String(63), sa.ForeignKey("pools.name"), nullable=False),
        sa.Column("node", sa.String(63), nullable=True),
        sa.Column("file", sa.String(128), nullable=False),
        sa.Column("format", sa.String(10), nullable=False),
        sa.Column("size_mb", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("vm_uuid", sa.String(36), nullable=True),
        sa.Column("device", sa.String(8), nullable=True),
        sa.Column("task_id", sa.String(36), nullable=True),
        sa.Column("delete_with_vm", sa.Boolean(), nullable=False),
        sa.Column("fault", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    assert volumes is not None
    op.create_index("ix_volumes_vm_uuid_device", "volumes", ["vm_uuid", "device"], unique=True)
    op.create_index("ix_volumes_pool_file", "volumes", ["pool", "file"])
    op.create_table(
        "volume_snapshots",
        sa.Column(
            "volume_id", sa.String(36), sa.ForeignKey("volumes.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("size_mb", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )  # fmt: skip
    conn = op.get_bind()
    now = datetime.now(UTC)
    pools = sa.table(
        "pools",
        sa.column("name"), sa.column("type"), sa.column("path"), sa.column("nodes"),
        sa.column("description"), sa.column("created_at"), sa.column("updated_at"),
    )  # fmt: skip
    conn.execute(
        pools.insert().values(
            name="local",
            type="local",
            path=None,
            nodes=None,
            description="each host's default storage directory",
            created_at=now,
            updated_at=now,
        )
    )
    vms = sa.table("vms", sa.column("uuid"), sa.column("name"), sa.column("node"),
                   sa.column("disks", sa.JSON()))  # fmt: skip
    rows: list[dict[str, Any]] = []
    names: set[str] = set()
    for vm in conn.execute(sa.select(vms)).mappings():
        for index, disk in enumerate(vm["disks"] or ()):
            device = "vd" + _DEVICES[index]
            rows.append(
                {
                    "id": str(uuid.uuid4()),
                    "name": _unique(f"{vm['name'][:58]}-{device}", names),
                    "pool": "local",
                    "node": vm["node"],
                    "file": f"{vm['uuid']}-{device}.qcow2",
                    "format": "qcow2",
                    "size_mb": int(disk["size_mb"]),
                    "state": "attached",
                    "vm_uuid": vm["uuid"],
                    "device": device,
                    "task_id": None,
                    "delete_with_vm": True,
                    "fault": None,
                    "created_at": now,
                    "updated_at": now,
                }
            )
    if rows:
        conn.execute(volumes.insert(), rows)
    with op.batch_alter_table("vms", schema=None) as batch_op:
        batch_op.drop_column("disks")


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name[:58]}-{n}"
    taken.add(candidate)
    return candidate


def downgrade() -> None:
    with op.batch_alter_table("vms", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("disks", sa.JSON(), nullable=False, server_default=sa.text("'[]'"))
        )
    conn = op.get_bind()
    volumes = sa.table("volumes", sa.column("vm_uuid"), sa.column("device"),
                       sa.column("size_mb"))  # fmt: skip
    vms = sa.table("vms", sa.column("uuid"), sa.column("disks", sa.JSON()))
    disks: dict[str, list[tuple[str, int]]] = {}
    query = sa.select(volumes).where(volumes.c.vm_uuid.is_not(None))
    for row in conn.execute(query).mappings():
        disks.setdefault(row["vm_uuid"], []).append((row["device"], int(row["size_mb"])))
    for vm_uuid, items in disks.items():
        value = [{"size_mb": size} for _device, size in sorted(items)]
        conn.execute(vms.update().where(vms.c.uuid == vm_uuid).values(disks=value))
    op.drop_table("volume_snapshots")
    op.drop_index("ix_volumes_pool_file", table_name="volumes")
    op.drop_index("ix_volumes_vm_uuid_device", table_name="volumes")
    op.drop_table("volumes")
    op.drop_table("pool_hosts")
    op.drop_table("pools")
