"""The `macs` store on SQLite and PostgreSQL: a MAC belongs to one VM, assignment retries a
bounded number of times, a lost race fails only its savepoint (the caller's transaction goes
on, which matters on PostgreSQL), and removing a VM frees its MACs."""

from __future__ import annotations

import threading
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
from tests.support.cluster import DEADLINE

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


def test_a_name_taken_by_a_create_not_committed_yet_is_already_exists(db: Database) -> None:
    """Two creates of one name: the second checked the name before the first committed, so
    its insert meets the unique name once the first commits: AlreadyExists (it was an
    IntegrityError, a 500). PostgreSQL only: SQLite runs one writer at a time."""
    if db.kind == "sqlite":
        pytest.skip("SQLite runs one write transaction at a time: creates cannot interleave")
    first_in = threading.Event()
    release = threading.Event()
    errors: list[BaseException] = []

    def first() -> None:
        with db.write() as conn:
            vms.create(
                conn, uuid="u1", name="twin", node="node1", vcpus=1, memory_mb=256,
                desired_power=DesiredPower.STOPPED, task_id="t-u1", now=NOW,
            )  # fmt: skip
            first_in.set()
            assert release.wait(DEADLINE)

    def second() -> None:
        try:
            with db.write() as conn:
                assert not vms.name_taken(conn, "twin")  # (not committed yet: not seen)
                release.set()  # the first commits while this insert waits on its row
                vms.create(
                    conn, uuid="u2", name="twin", node="node1", vcpus=1, memory_mb=256,
                    desired_power=DesiredPower.STOPPED, task_id="t-u2", now=NOW,
                )  # fmt: skip
        except BaseException as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)

    one = threading.Thread(target=first)
    one.start()
    assert first_in.wait(DEADLINE)
    two = threading.Thread(target=second)
    two.start()
    one.join(DEADLINE)
    two.join(DEADLINE)
    assert not one.is_alive() and not two.is_alive()
    assert [type(e) for e in errors] == [AlreadyExists], errors
    assert "a VM named 'twin' already exists" in str(errors[0])
    with db.read() as conn:
        assert vms.get(conn, "twin").uuid == "u1"
