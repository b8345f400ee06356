"""The `macs` store on SQLite and PostgreSQL: a MAC belongs to one VM, assignment retries a
bounded number of times, a lost race fails only its savepoint (the caller's transaction goes
on, which matters on PostgreSQL), and removing a VM frees its MACs."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from bollard.domain.errors import AlreadyExists, TemporaryError
from bollard.domain.models import Nic
from bollard.domain.states import DesiredPower
from bollard.store import macs, migrate, nodes, vms
from bollard.store.db import Database
from bollard.store.tables import macs as macs_table

NOW = datetime(2026, 11, 21, tzinfo=UTC)


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    migrate.upgrade(database)
    with database.write() as conn:
        nodes.create(conn, "node1", "hash", NOW)
    yield database
    database.dispose()


def _create(db: Database, uuid: str, name: str, nics: list[Nic]) -> tuple[Nic, ...]:
    with db.write() as conn:
        assigned = macs.assign(conn, uuid, nics)
        vms.create(
            conn, uuid=uuid, name=name, node="node1", vcpus=1, memory_mb=256,
            desired_power=DesiredPower.STOPPED, task_id=f"t-{uuid}", now=NOW, nics=assigned,
        )  # fmt: skip
    return assigned


def test_a_taken_mac_names_its_vm_and_removal_frees_it(db: Database) -> None:
    mac = "52:54:00:aa:bb:cc"
    [nic] = _create(db, "u1", "one", [Nic(mac, bridge="br0")])
    assert nic == Nic(mac, bridge="br0")
    with db.read() as conn:
        assert vms.get(conn, "one").nics == (nic,)
        assert macs.owner(conn, mac) == "u1"
    with pytest.raises(AlreadyExists, match="52:54:00:aa:bb:cc is already taken by VM 'one'"):
        _create(db, "u2", "two", [Nic("", network="default"), Nic(mac, network="default")])
    with db.read() as conn:
        assert vms.find_by_uuid(conn, "u2") is None
        assert macs.of_vm(conn, "u2") == []  # the assigned one went with the transaction
    with db.write() as conn:
        vms.remove(conn, "u1")
        assert macs.owner(conn, mac) is None
    assert _create(db, "u2", "two", [Nic(mac, network="default")])[0].mac == mac


def test_assignment_retries_a_taken_pick_then_gives_up(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    picks = iter([b"\x00\x00\x01", b"\x00\x00\x01", b"\x00\x00\x02"])
    monkeypatch.setattr(macs, "token_bytes", lambda n: next(picks))
    assigned = _create(db, "u1", "one", [Nic("", bridge="br0"), Nic("", bridge="br1")])
    assert [n.mac for n in assigned] == ["52:54:00:00:00:01", "52:54:00:00:00:02"]

    calls: list[int] = []

    def always_the_same(n: int) -> bytes:
        calls.append(n)
        return b"\x00\x00\x01"

    monkeypatch.setattr(macs, "token_bytes", always_the_same)
    with pytest.raises(TemporaryError, match="no free MAC address"):
        _create(db, "u2", "two", [Nic("", bridge="br0")])
    assert len(calls) == macs.ALLOCATE_ATTEMPTS
    with db.read() as conn:
        assert vms.find_by_uuid(conn, "u2") is None


def test_a_lost_race_fails_only_its_savepoint(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As if another transaction took the MAC between the check and the insert: the insert
    conflicts, the caller's transaction stays usable and the conflict is reported."""
    mac = "52:54:00:00:00:09"
    _create(db, "u1", "one", [Nic(mac, bridge="br0")])
    real_owner = macs.owner
    blind = [True]

    def owner_once_blind(conn: object, wanted: str) -> str | None:
        if blind and wanted == mac:
            blind.pop()
            return None
        return real_owner(conn, wanted)  # type: ignore[arg-type]

    monkeypatch.setattr(macs, "owner", owner_once_blind)
    with db.write() as conn:
        with pytest.raises(AlreadyExists, match="taken by VM 'one'"):
            macs.claim(conn, mac, "u2")
        macs.claim(conn, "52:54:00:00:00:0a", "u2")  # the transaction goes on
    with db.read() as conn:
        rows = conn.execute(select(macs_table.c.mac, macs_table.c.vm_uuid)).all()
    assert sorted(map(tuple, rows)) == [(mac, "u1"), ("52:54:00:00:00:0a", "u2")]
