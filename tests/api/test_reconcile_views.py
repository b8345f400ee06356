"""The state pass reads VMs and host entries through narrow readers (vms.views,
host_vms.views); on real databases they must say exactly what the full records say."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from bollard.domain.drift import HostView, VmView
from bollard.domain.protocol import VmReport
from bollard.domain.states import DesiredPower, PowerState, VmState
from bollard.store import host_vms, migrate, nodes, vms
from bollard.store.db import Database
from bollard.store.tables import vms as vms_table

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    migrate.upgrade(database)
    yield database
    database.dispose()


def test_narrow_readers_match_the_full_records(db: Database) -> None:
    with db.write() as conn:
        for node in ("n1", "n2", "n3"):
            nodes.create(conn, node, f"hash-{node}", NOW)
        # A VM still held by its creating task, one ended ACTIVE with an HA policy, one
        # stopped with autostart, one in ERROR: every field the pass reads varies.
        specs = [
            ("c-building", "n1", DesiredPower.RUNNING, None, None),
            ("b-active", "n1", DesiredPower.RUNNING, "none", VmState.ACTIVE),
            ("a-stopped", "n2", DesiredPower.STOPPED, None, VmState.STOPPED),
            ("d-error", "n3", DesiredPower.RUNNING, "restart", VmState.ERROR),
        ]
        for i, (name, node, desired, ha, ended_as) in enumerate(specs):
            uuid, task = f"00000000-0000-4000-8000-00000000000{i}", f"task-{i}"
            vms.create(
                conn, uuid=uuid, name=name, node=node, vcpus=i + 1, memory_mb=256 * (i + 1),
                desired_power=desired, task_id=task, now=NOW - timedelta(minutes=i), ha=ha,
            )  # fmt: skip
            if ended_as is not None:
                vms.end_task(conn, uuid, task, NOW, vm_state=ended_as)
        conn.execute(
            update(vms_table).where(vms_table.c.name == "a-stopped").values(autostart=True)
        )
        reports = {
            "n1": [VmReport(uuid="00000000-0000-4000-8000-000000000001", name="b-active",
                            power=PowerState.RUNNING, vcpus=2, memory_mb=512, epoch=1)],
            "n2": [VmReport(uuid="00000000-0000-4000-8000-000000000002", name="a-stopped",
                            power=PowerState.STOPPED, vcpus=3, memory_mb=768, epoch=1),
                   VmReport(uuid="99999999-0000-4000-8000-000000000009", name="stray",
                            power=PowerState.PAUSED, vcpus=8, memory_mb=64, epoch=7)],
            "n3": [VmReport(uuid="00000000-0000-4000-8000-000000000003", name="d-error",
                            power=PowerState.CRASHED, vcpus=4, memory_mb=1024, epoch=2)],
        }  # fmt: skip
        for node, reported in reports.items():
            host_vms.replace_node(conn, node, reported, 1, NOW)

    with db.read() as conn:
        full = vms.all_vms(conn)
        narrow = vms.views(conn)
        entries = host_vms.all_entries(conn)
        hosts = host_vms.views(conn, ["n1", "n2"])  # n3's inventory not wanted

    assert [v.name for v in full] == ["a-stopped", "b-active", "c-building", "d-error"]
    assert narrow == [VmView.of(v) for v in full]
    assert {v.name: v.ha_policy for v in narrow} == {
        "a-stopped": "none", "b-active": "none", "c-building": "restart", "d-error": "restart"
    }  # fmt: skip
    assert all(v.updated_at.tzinfo is not None for v in narrow)
    assert sorted(hosts) == sorted(
        (e.node, HostView.of(e)) for e in entries if e.node in ("n1", "n2")
    )
    assert {view.name for _, view in hosts} == {"b-active", "a-stopped", "stray"}
