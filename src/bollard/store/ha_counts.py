"""A VM's HA hold and its restart and relocate counts (domain/ha.py): how the restart and
relocate limits are kept. Plain updates on the VM's row, outside its state machine."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, update

from bollard.domain.ha import HaHold
from bollard.store.tables import vms


def set_hold(conn: Connection, uuid: str, hold: HaHold | None, now: datetime) -> None:
    """Ignored, error, or nothing (None: HA acts on it again, its counts start anew)."""
    values: dict[str, object] = {"ha_hold": None if hold is None else hold.value}
    if hold is None:
        values |= {"ha_restarts": 0, "ha_relocates": 0}
    conn.execute(update(vms).where(vms.c.uuid == uuid).values(updated_at=now, **values))


def count_restart(conn: Connection, uuid: str, now: datetime) -> None:
    conn.execute(
        update(vms)
        .where(vms.c.uuid == uuid)
        .values(ha_restarts=vms.c.ha_restarts + 1, updated_at=now)
    )


def count_relocate(conn: Connection, uuid: str, now: datetime) -> None:
    """A relocation: counted, and the restarts on the new node start from none."""
    conn.execute(
        update(vms)
        .where(vms.c.uuid == uuid)
        .values(ha_relocates=vms.c.ha_relocates + 1, ha_restarts=0, updated_at=now)
    )


def reset_counts(conn: Connection, uuid: str, now: datetime) -> None:
    """It ran steadily: its restarts and relocations start from none again."""
    conn.execute(
        update(vms)
        .where(vms.c.uuid == uuid, (vms.c.ha_restarts > 0) | (vms.c.ha_relocates > 0))
        .values(ha_restarts=0, ha_relocates=0, updated_at=now)
    )
