"""The Alembic migrations build exactly the schema the code's table definitions describe."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from bollard.domain.models import Nic
from bollard.domain.states import DesiredPower
from bollard.store import migrate, nodes, pools, steps, vms, volumes
from bollard.store.db import Database
from bollard.store.tables import metadata


def test_migrations_match_the_table_definitions(empty_db_url: str) -> None:
    db = Database(empty_db_url)
    try:
        assert migrate.upgrade(db).revision == migrate.head_revision()
        with db.engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    finally:
        db.dispose()


def test_upgrade_is_idempotent(empty_db_url: str) -> None:
    db = Database(empty_db_url)
    try:
        first = migrate.upgrade(db).revision
        assert migrate.upgrade(db).revision == first
        assert migrate.current_revision(db) == first
    finally:
        db.dispose()


def _upgrade_to(db: Database, revision: str) -> None:
    """The schema as Alembic revision ``revision`` made it (not the newest)."""
    cfg = migrate._config(db)
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def _insert_old_vm(db: Database, now: datetime, **later: str) -> None:
    """A stopped VM 'old' as the schema of an earlier revision stores it, with the columns
    that revision has beyond the first ones (`later`, by SQL literal)."""
    columns = "".join(f", {name}" for name in later)
    literals = "".join(f", {value}" for value in later.values())
    with db.write() as conn:
        conn.execute(
            text(
                "INSERT INTO vms (uuid, name, vcpus, memory_mb, epoch, vm_state, desired_power,"
                " observed_power, observed_seq, migration_method, on_lost, ha_priority,"
                f" autostart, created_at, updated_at{columns}) VALUES ('u-old', 'old', 1, 256,"
                " 1, 'stopped', 'stopped', 'stopped', 0, 'default', 'none', 0, :no, :now,"
                f" :now{literals})"
            ),
            {"no": False, "now": now},
        )


def test_vm_disks_become_volumes_of_pool_local(empty_db_url: str) -> None:
    """0011 turns every VM disk (vms.disks: sizes in device order) into a volume of the pool
    `local`, attached to its VM at its device, on its node, in the file the disk had,
    deleted with the VM; a VM without disks gets no volume."""
    db = Database(empty_db_url)
    try:
        _upgrade_to(db, "0010")
        now = datetime.now(UTC)
        with db.write() as conn:
            conn.execute(
                text(
                    "INSERT INTO nodes (name, token_hash, health, scheduling, connected, vcpus,"
                    " memory_mb, allocated_vcpus, allocated_memory_mb, last_seq, created_at,"
                    " updated_at) VALUES ('node1', 'h', 'up', 'ready', :no, 8, 8192, 0, 0, 0,"
                    " :now, :now)"
                ),
                {"no": False, "now": now},
            )
        _insert_old_vm(db, now, node="'node1'", disks="""'[{"size_mb": 10240}, {"size_mb": 1}]'""")
        with db.write() as conn:
            conn.execute(text("UPDATE vms SET name = 'web' WHERE uuid = 'u-old'"))
        migrate.upgrade(db)
        with db.read() as conn:
            [pool] = pools.list_all(conn)
            assert (pool.name, pool.type, pool.path, pool.nodes) == ("local", "local", None, None)
            shown = [
                (v.name, v.pool, v.node, v.file, v.size_mb, v.state, v.device, v.delete_with_vm)
                for v in volumes.of_vm(conn, "u-old")
            ]
        assert shown == [
            ("web-vda", "local", "node1", "u-old-vda.qcow2", 10240, "attached", "vda", True),
            ("web-vdb", "local", "node1", "u-old-vdb.qcow2", 1, "attached", "vdb", True),
        ]
    finally:
        db.dispose()


def test_vms_from_before_nics_have_none(empty_db_url: str) -> None:
    """0008 adds vms.nics and macs: a VM stored before has no NICs; one created after keeps
    its own."""
    db = Database(empty_db_url)
    try:
        _upgrade_to(db, "0007")
        now = datetime.now(UTC)
        _insert_old_vm(db, now, disks="'[]'")
        migrate.upgrade(db)
        nics = (
            Nic("52:54:00:00:00:01", bridge="br0"),
            Nic("52:54:00:00:00:02", "default", model="e1000"),
        )
        with db.write() as conn:
            assert vms.get(conn, "old").nics == ()
            nodes.create(conn, "node1", "hash", now)
            new = vms.create(
                conn, uuid="u-new", name="new", node="node1", vcpus=1, memory_mb=256,
                desired_power=DesiredPower.STOPPED, task_id="t1", now=now, nics=nics,
            )  # fmt: skip
            assert new.nics == nics
        with db.read() as conn:
            assert vms.get(conn, "new").nics == nics
            assert vms.get(conn, "old").nics == ()
    finally:
        db.dispose()


def test_steps_from_before_retries_have_no_attempts(empty_db_url: str) -> None:
    """0009 adds task_steps.attempts and retry_at: a step stored before has made no attempts
    and waits for nothing; one stored after keeps both."""
    db = Database(empty_db_url)
    try:
        _upgrade_to(db, "0008")
        now = datetime.now(UTC)
        with db.write() as conn:
            # As revision 0008 stores a task (today's store also writes later columns).
            conn.execute(
                text(
                    "INSERT INTO tasks (id, type, state, params, cancel_requested, created_at,"
                    " updated_at) VALUES ('t-old', 'create', 'running', '{}', false, :now, :now)"
                ),
                {"now": now},
            )
            conn.execute(
                text(
                    "INSERT INTO task_steps (task_id, idx, name, state, result, commands)"
                    " VALUES ('t-old', 0, 'define', 'running', '{}', '{}')"
                )
            )
        migrate.upgrade(db)
        retry_at = now + timedelta(seconds=30)
        with db.write() as conn:
            old = steps.get(conn, "t-old", 0)
            assert (old.state, old.attempts, old.retry_at) == ("running", 0, None)
            steps.mark(conn, "t-old", 0, "waiting", now, attempts=1, retry_at=retry_at)
        with db.read() as conn:
            waiting = steps.get(conn, "t-old", 0)
            assert (waiting.state, waiting.attempts, waiting.retry_at) == ("waiting", 1, retry_at)
    finally:
        db.dispose()
