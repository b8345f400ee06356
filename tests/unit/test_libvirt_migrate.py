"""The libvirt driver's migrations and jobs, without real daemons: the pure parts (the
migration call, deciding a job's outcome, the job records), and the driver against
libvirt's test driver (``test:///<node.xml>``), which migrates nothing but has hosts and
domains enough for the refusals and for a restarted agent settling its jobs.

Every connection to a ``test:///<file>`` URI is a host of its own made from the file: the
settling, which opens new connections, reads the domains as the node file has them.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

libvirt = pytest.importorskip("libvirt", reason="libvirt-python is not installed")

from bollard.agent.drivers.base import (  # noqa: E402
    JobDriver,
    JobStatus,
    MigrationDriver,
    MigrationEndpoint,
)
from bollard.agent.drivers.libvirt import LibvirtDriver  # noqa: E402
from bollard.agent.drivers.libvirt import migrate as M  # noqa: E402
from bollard.agent.drivers.libvirt import migrate_plan as P  # noqa: E402
from bollard.agent.drivers.libvirt.jobs import RETENTION, JobRecord, JobTable  # noqa: E402
from bollard.agent.drivers.libvirt.xml import parse_domain, with_epoch  # noqa: E402
from bollard.domain.errors import (  # noqa: E402
    DriverError,
    DriverInvalidState,
    DriverNotFound,
    DriverPermanent,
    DriverTemporary,
)

T = TypeVar("T")

UUID = "11111111-1111-4111-8111-111111111111"
MISSING = "99999999-9999-4999-8999-999999999999"
UNREACHABLE = "qemu+tcp://127.0.0.1:1/system"  # nothing listens on port 1


def run(coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(bounded())


def domain(
    uuid: str = UUID,
    epoch: int | None = 3,
    *,
    running: bool = True,
    persistent: bool = True,
    name: str | None = None,
) -> str:
    """A test-driver domain for a node file (``epoch`` None: not Bollard's)."""
    meta = (
        ""
        if epoch is None
        else f'<metadata><bollard:vm xmlns:bollard="https://bollard.dev/xmlns/vm/1" '
        f'uuid="{uuid}" epoch="{epoch}" name="web-1"/></metadata>'
    )
    state = "" if running else "<test:runstate>5</test:runstate>"
    transient = "" if persistent else "<test:transient/>"
    return f"""
  <domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
    <name>{name or "bollard-" + uuid}</name><uuid>{uuid}</uuid>{meta}
    <memory unit='MiB'>512</memory><vcpu>2</vcpu><os><type>hvm</type></os>
    {state}{transient}
  </domain>"""


def host(tmp_path: Path, name: str, *domains: str) -> str:
    """The URI of a test-driver host with these domains."""
    node = tmp_path / f"{name}.xml"
    node.write_text(
        "<node><cpu><nodes>1</nodes><sockets>1</sockets><cores>4</cores><threads>2</threads>"
        "<active>8</active><mhz>2000</mhz><model>x86_64</model></cpu>"
        f"<memory>4194304</memory>{''.join(domains)}</node>"
    )
    return f"test://{node}"


def make(tmp_path: Path, uri: str, **kw: Any) -> LibvirtDriver:
    kw.setdefault("jobs_dir", tmp_path / "jobs")
    return LibvirtDriver(uri, "qemu", tmp_path / "consoles", node="a", **kw)


def endpoint(uri: str) -> dict[str, Any]:
    return {"uri": uri, "address": "127.0.0.1"}


# the pure parts


def test_the_driver_migrates_and_advertises_its_endpoint(tmp_path: Path) -> None:
    uri = host(tmp_path, "a")
    plain = make(tmp_path, uri)
    assert isinstance(plain, MigrationDriver) and isinstance(plain, JobDriver)
    assert isinstance(plain, MigrationEndpoint)
    assert plain.migration_endpoint() is None  # VMs cannot migrate here
    d = make(
        tmp_path, uri, migration_uri="qemu+tcp://10.0.0.5/system", migration_address="10.1.0.5"
    )
    assert d.migration_endpoint() == {
        "uri": "qemu+tcp://10.0.0.5/system",
        "address": "10.1.0.5",
        "image_dir": "/var/lib/libvirt/images/bollard",  # where its VMs' disks are
        "console_dir": str((tmp_path / "consoles").absolute()),
    }
    assert make(tmp_path, uri).jobs is d.jobs  # one table per jobs directory
    default = LibvirtDriver(uri, "qemu", tmp_path / "state" / "consoles")
    assert default.jobs.dir == (tmp_path / "state" / "libvirt-jobs").absolute()


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"migration_uri": " "}, "migration URI"),
        ({"migration_address": ""}, "migration address"),
        ({"migration_max_downtime_ms": 0}, "max downtime"),
        ({"migration_bandwidth_mib": -1}, "bandwidth"),
        ({"abort_wait": -1.0}, "abort wait"),
    ],
)
def test_bad_migration_settings(tmp_path: Path, kw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make(tmp_path, host(tmp_path, "a"), **kw)


DEFINITION = f"""<domain type='qemu'><name>bollard-{UUID}</name><uuid>{UUID}</uuid>
<metadata><bollard:vm xmlns:bollard="https://bollard.dev/xmlns/vm/1" uuid="{UUID}"
 epoch="3" name="web-1"/><other xmlns="urn:x">kept</other></metadata>
<memory unit='KiB'>524288</memory><vcpu>2</vcpu></domain>"""


def test_with_epoch_changes_the_epoch_only() -> None:
    changed = with_epoch(DEFINITION, 4)
    facts = parse_domain(changed)
    assert facts.meta is not None and facts.meta.epoch == 4
    assert (facts.uuid, facts.vcpus, facts.memory_mb, facts.meta.name) == (UUID, 2, 512, "web-1")
    assert "kept" in changed
    with pytest.raises(ValueError, match="no Bollard metadata"):
        with_epoch("<domain><uuid>x</uuid></domain>", 4)


def test_the_live_migration_call() -> None:
    params, flags = P.migration_call(True, DEFINITION, 4, "10.1.0.5", 64)
    assert flags == (
        libvirt.VIR_MIGRATE_LIVE
        | libvirt.VIR_MIGRATE_PEER2PEER
        | libvirt.VIR_MIGRATE_PERSIST_DEST
        | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
    )
    assert params[libvirt.VIR_MIGRATE_PARAM_URI] == "tcp://10.1.0.5"  # no port: the target's
    assert params[libvirt.VIR_MIGRATE_PARAM_LISTEN_ADDRESS] == "10.1.0.5"
    assert params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] == 64
    meta = parse_domain(params[libvirt.VIR_MIGRATE_PARAM_PERSIST_XML]).meta
    assert meta is not None and meta.epoch == 4
    assert libvirt.VIR_MIGRATE_PARAM_DEST_XML not in params
    plain, _ = P.migration_call(True, DEFINITION, 4, None, None)
    assert set(plain) == {libvirt.VIR_MIGRATE_PARAM_PERSIST_XML}  # libvirt's defaults
    v6, _ = P.migration_call(True, DEFINITION, 4, "fd00::5", None)
    assert v6[libvirt.VIR_MIGRATE_PARAM_URI] == "tcp://[fd00::5]"


def test_a_live_migration_copies_the_disks_named() -> None:
    params, flags = P.migration_call(True, DEFINITION, 4, None, None, ["vda", "vdb"])
    assert flags & libvirt.VIR_MIGRATE_NON_SHARED_DISK
    assert flags & libvirt.VIR_MIGRATE_LIVE
    assert params[libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS] == ["vda", "vdb"]
    none, flags = P.migration_call(True, DEFINITION, 4, None, None, [])
    assert not flags & libvirt.VIR_MIGRATE_NON_SHARED_DISK
    assert libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS not in none
    # Offline, the agent copies them before the call: libvirt refuses a storage copy then.
    offline, flags = P.migration_call(False, DEFINITION, 4, None, None, ["vda"])
    assert not flags & libvirt.VIR_MIGRATE_NON_SHARED_DISK and set(offline) == {
        libvirt.VIR_MIGRATE_PARAM_DEST_XML
    }


def test_the_offline_migration_call() -> None:
    params, flags = P.migration_call(False, DEFINITION, 4, "10.1.0.5", 64)
    assert flags == (
        libvirt.VIR_MIGRATE_OFFLINE
        | libvirt.VIR_MIGRATE_PEER2PEER
        | libvirt.VIR_MIGRATE_PERSIST_DEST
        | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
    )
    assert set(params) == {libvirt.VIR_MIGRATE_PARAM_DEST_XML}  # (PERSIST_XML is ignored)
    meta = parse_domain(params[libvirt.VIR_MIGRATE_PARAM_DEST_XML]).meta
    assert meta is not None and meta.epoch == 4


def test_endpoints() -> None:
    assert P.endpoint_of("b", {"uri": "qemu+tcp://b/system", "address": None}) == P.Endpoint(
        "qemu+tcp://b/system", None
    )
    for missing in (None, {}, {"uri": ""}, {"address": "10.0.0.1"}):
        with pytest.raises(DriverTemporary, match="target b has no migration endpoint"):
            P.endpoint_of("b", missing)
    with pytest.raises(DriverError) as bad:
        P.endpoint_of("b", {"uri": "qemu+tcp://b/system", "address": 5})
    assert bad.value.code == "invalid-input"


def test_progress_is_data_processed_over_data_total() -> None:
    assert P.fraction({"type": 2, "data_total": 0, "data_processed": 0}) is None
    assert P.fraction({"type": 2, "data_total": 200, "data_processed": 50}) == 0.25
    assert P.fraction({"type": 2, "data_total": 100, "data_processed": 150}) == 1.0


def record(tmp_path: Path | None = None, target_uri: str = UNREACHABLE, **kw: Any) -> JobRecord:
    values: dict[str, Any] = {
        "command_id": "m1",
        "vm_uuid": UUID,
        "source": "a",
        "target": "b",
        "target_uri": target_uri,
        "address": "127.0.0.1",
        "live": True,
        "new_epoch": 4,
        "started_at": time.time(),
        "phase": "transfer",
        **kw,
    }
    return JobRecord(**values)


def copy(
    active: bool = True, persistent: bool = True, migrating: bool = False, epoch: int = 3
) -> P.Copy:
    return P.Copy(active=active, persistent=persistent, migrating=migrating, epoch=epoch)


S, C, A, F = JobStatus.RUNNING, JobStatus.COMPLETED, JobStatus.ABORTED, JobStatus.FAILED


@pytest.mark.parametrize(
    ("live", "source", "target", "status", "code"),
    [
        # libvirt's job still runs on the source
        (True, copy(migrating=True), None, S, ""),
        # the VM runs on the source: not moved, without asking the target
        (True, copy(), None, F, P.MIGRATION_FAILED),
        # moved: gone from the source, persistent on the target (its epoch is set after)
        (True, None, copy(epoch=4), C, ""),
        (True, None, copy(epoch=3), C, ""),
        (False, None, copy(active=False, epoch=4), C, ""),
        # moved, with the source's definition left behind
        (True, copy(active=False), copy(epoch=4), F, P.CLEANUP_FAILED),
        (False, copy(active=False), copy(active=False, epoch=4), F, P.CLEANUP_FAILED),
        # not moved: the target has a leftover (older) copy, or none, or one migrating in
        (False, copy(active=False), copy(active=False, epoch=2), F, P.MIGRATION_FAILED),
        (False, copy(active=False), None, F, P.MIGRATION_FAILED),
        (True, copy(active=False), copy(epoch=4, persistent=False, migrating=True), F,
         P.MIGRATION_FAILED),
        # on neither host
        (True, None, None, F, P.MIGRATION_LOST),
    ],
)  # fmt: skip
def test_deciding_what_became_of_a_migration(
    live: bool, source: P.Copy | None, target: P.Copy | None, status: JobStatus, code: str
) -> None:
    rec = record(live=live)
    outcome = P.decide(rec, source, target)
    assert (outcome.status, outcome.error_code) == (status, code)
    assert outcome.moved == (status == C or code == P.CLEANUP_FAILED)
    # the target is asked only when the source cannot tell
    asks_target = P.from_source(rec, source) is None
    assert asks_target == (source is None or not (source.migrating or (live and source.active)))


def test_a_migration_that_did_not_move_the_vm_is_aborted_when_asked_or_cancelled() -> None:
    here = copy()
    asked = P.decide(record(abort_reason="cancel hook: lost the server"), here, None)
    assert (asked.status, asked.message) == (A, "cancel hook: lost the server")
    cancelled = record(call_error="operation aborted: canceled by client", call_error_code=78)
    by_libvirt = P.decide(cancelled, here, None)
    assert by_libvirt.status == A
    assert by_libvirt.message == "operation aborted: canceled by client"
    # an abort asked for too late: the VM moved all the same
    late = P.decide(record(abort_reason="x"), None, copy(epoch=4))
    assert late.status == C


# job records


def test_job_records(tmp_path: Path) -> None:
    table = JobTable(tmp_path / "jobs")
    assert table.all() == [] and table.get("m1") is None
    runner = threading.Thread(target=lambda: None)
    _, created = table.create(record(), runner)
    assert created and table.running_here("m1")
    again, created = table.create(record(new_epoch=9), threading.Thread(target=lambda: None))
    assert not created and again.new_epoch == 4  # the first one stays
    assert table.ask_abort("m1", "first") is not None
    assert table.ask_abort("m1", "second").abort_reason == "first"  # type: ignore[union-attr]
    ended = table.finish("m1", status=JobStatus.ABORTED, message="first")
    assert ended is not None and ended.status == JobStatus.ABORTED and ended.ended_at
    late = table.finish("m1", status=JobStatus.COMPLETED)
    assert late is not None and late.status == JobStatus.ABORTED  # the first end wins
    assert table.update("m1", phase="x").phase == "transfer"  # type: ignore[union-attr]
    table.runner_done("m1")
    assert not table.running_here("m1")
    # records outlive the process: another table (a restarted agent) reads them
    assert JobTable(tmp_path / "jobs").get("m1") == table.get("m1")
    assert table.progress("m1", 0.5) == 0.5 and table.progress("m1", 0.25) == 0.5


def test_job_records_ignore_bad_files_and_ids(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    table = JobTable(jobs)
    table.create(record(command_id="ok", started_at=2.0), threading.Thread())
    table.create(record(command_id="older", started_at=1.0), threading.Thread())
    (jobs / "torn.json").write_text('{"command_id": ')
    (jobs / "alien.json").write_text(json.dumps({"hello": 1}))
    (jobs / ".tmp-ok.json.1.x").write_text("{}")
    assert [r.command_id for r in table.all()] == ["older", "ok"]
    assert table.get("../etc/passwd") is None and table.get("") is None
    with pytest.raises(ValueError):
        table.create(record(command_id="a/b"), threading.Thread())


def test_old_ended_records_are_pruned(tmp_path: Path) -> None:
    table = JobTable(tmp_path / "jobs")
    table.create(record(command_id="old"), threading.Thread())
    table.finish("old", status=JobStatus.COMPLETED, ended_at=time.time() - RETENTION - 1)
    table.create(record(command_id="recent"), threading.Thread())
    table.finish("recent", status=JobStatus.COMPLETED)
    table.create(record(command_id="running"), threading.Thread())
    fresh = JobTable(tmp_path / "jobs")
    assert [r.command_id for r in fresh.all()] == ["recent", "running"]
    assert not (tmp_path / "jobs" / "old.json").exists()


# refusals: nothing is done


def test_refusals(tmp_path: Path) -> None:
    other = "22222222-2222-4222-8222-222222222222"
    source = host(
        tmp_path, "a", domain(UUID), domain(other, running=False),
        domain(MISSING.replace("9", "3"), epoch=None),
    )  # fmt: skip
    newer = host(tmp_path, "newer", domain(UUID, epoch=9, running=False))
    running = host(tmp_path, "running", domain(UUID, epoch=2))
    foreign = host(tmp_path, "foreign", domain(UUID, epoch=None, name="someone-elses"))
    empty = host(tmp_path, "b")
    d = make(tmp_path, source)

    async def refused(error: type[Exception], uuid: str, target: str | None, *,
                      live: bool = True, epoch: int = 4, code: str | None = None,
                      **advertised: str) -> str:  # fmt: skip
        ep = None if target is None else endpoint(target) | advertised
        with pytest.raises(error) as caught:
            await d.migrate("r1", uuid, "b", live=live, new_epoch=epoch, target_endpoint=ep)
        if code is not None:
            assert getattr(caught.value, "code", None) == code
        return str(caught.value)

    async def go() -> None:
        await refused(DriverNotFound, MISSING, empty)
        await refused(DriverNotFound, MISSING.replace("9", "3"), empty)  # not Bollard's
        assert "only a running VM migrates live" in await refused(DriverInvalidState, other, empty)
        assert "stop it" in await refused(DriverInvalidState, UUID, empty, live=False)
        await refused(DriverError, UUID, empty, epoch=3, code="invalid-input")
        assert "no migration endpoint" in await refused(DriverTemporary, UUID, None)
        assert "cannot connect" in await refused(DriverTemporary, UUID, UNREACHABLE)
        assert "newer epoch 9" in await refused(DriverInvalidState, UUID, newer)
        assert "already runs on b" in await refused(DriverInvalidState, UUID, running)
        assert "not Bollard's" in await refused(DriverInvalidState, UUID, foreign)
        await refused(DriverError, UUID, source, code="invalid-input")  # the same host
        # The definition names the console log by path: the target must write it there too.
        elsewhere = await refused(DriverPermanent, UUID, empty, console_dir="/srv/consoles")
        assert "same --libvirt-console-dir" in elsewhere
        ours = str((tmp_path / "consoles").absolute())
        with pytest.raises(DriverTemporary, match="cannot connect"):  # (got past that check)
            ep = endpoint(UNREACHABLE) | {"console_dir": ours}
            await d.migrate("r1", UUID, "b", live=True, new_epoch=4, target_endpoint=ep)
        assert await d.job("r1") is None
        assert await d.abort_job("r1", "x") is None
        assert not await d.vm_busy(UUID)
        assert list((tmp_path / "jobs").glob("*")) == []

    run(go())


def test_a_migration_libvirt_fails_is_a_failed_job(tmp_path: Path) -> None:
    """libvirt's test driver cannot migrate: the job starts, and fails, with the VM where
    it was."""
    d = make(tmp_path, host(tmp_path, "a", domain(UUID)))
    target = endpoint(host(tmp_path, "b"))

    async def go() -> None:
        job = await d.migrate("m1", UUID, "b", live=True, new_epoch=4, target_endpoint=target)
        assert job.command_id == "m1" and job.kind == "migrate" and job.vm_uuid == UUID
        while job.status == JobStatus.RUNNING:
            await asyncio.sleep(0.01)
            latest = await d.job("m1")
            assert latest is not None
            job = latest
        assert (job.status, job.error_code, job.phase) == (
            JobStatus.FAILED, P.MIGRATION_FAILED, "transfer"
        )  # fmt: skip
        assert "not supported" in job.message
        assert job.result == {
            "migration": {"phase": "transfer", "source": "a", "target": "b", "vm_on": "a"}
        }
        again = await d.migrate("m1", UUID, "b", live=True, new_epoch=4, target_endpoint=target)
        assert again == job  # the same job, not a second migration
        assert await d.abort_jobs("x") == []  # nothing runs
        assert not await d.vm_busy(UUID)

    run(go())


# a restarted agent: RUNNING records without a thread, settled from libvirt's state


def left_running(tmp_path: Path, target_uri: str, **kw: Any) -> None:
    """The record an agent that died during a migration left behind."""
    JobTable(tmp_path / "jobs").create(record(target_uri=target_uri, **kw), threading.Thread())


@pytest.mark.parametrize("live", [True, False])
def test_after_a_restart_a_migration_that_moved_the_vm_completed(
    tmp_path: Path, live: bool
) -> None:
    source = host(tmp_path, "a")
    target = host(tmp_path, "b", domain(UUID, epoch=3 if live else 4, running=live))
    left_running(tmp_path, target, live=live)
    d = make(tmp_path, source)
    job = run(d.job("m1"))
    assert job is not None and (job.status, job.progress, job.phase) == (
        JobStatus.COMPLETED, 1.0, "done"
    )  # fmt: skip
    vm = job.result["vm"]
    assert (vm["uuid"], vm["epoch"], vm["power"]) == (UUID, 4, "running" if live else "stopped")
    assert job.result["migration"]["vm_on"] == "b"
    assert run(d.job("m1")) == job  # ended: read from its record
    assert not run(d.vm_busy(UUID))


def test_a_source_copy_undefined_while_it_is_read_counts_as_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The migration ends (UNDEFINE_SOURCE) between finding the source's domain and reading
    its state: the settling reads that as "not on the source", not as an error (a CI run
    failed on this race with a real migration)."""
    source = host(tmp_path, "a", domain(UUID, running=False))
    target = host(tmp_path, "b", domain(UUID, epoch=4, running=False))
    left_running(tmp_path, target, live=False)
    real_find = M.domains.find
    vanished: list[str] = []

    def find_then_vanish(lib: Any, conn: Any, uuid: str) -> Any:
        found = real_find(lib, conn, uuid)
        if found is not None and not vanished:  # the first read: the source's
            conn.lookupByUUIDString(uuid).undefine()
            vanished.append(uuid)
        return found

    monkeypatch.setattr(M.domains, "find", find_then_vanish)
    job = run(make(tmp_path, source).job("m1"))
    assert vanished == [UUID]
    assert job is not None and (job.status, job.phase) == (JobStatus.COMPLETED, "done")
    assert job.result["migration"]["vm_on"] == "b"


def test_after_a_restart_a_migration_that_did_not_move_the_vm_failed(tmp_path: Path) -> None:
    d = make(tmp_path, host(tmp_path, "a", domain(UUID)))
    left_running(tmp_path, UNREACHABLE)  # the target need not be asked
    job = run(d.job("m1"))
    assert job is not None and (job.status, job.error_code) == (
        JobStatus.FAILED,
        "migration-failed",
    )
    assert "while its agent was not running" in job.message
    assert job.result["migration"]["vm_on"] == "a"


def test_after_a_restart_an_abort_asked_for_before_is_kept(tmp_path: Path) -> None:
    d = make(tmp_path, host(tmp_path, "a", domain(UUID)))
    left_running(tmp_path, UNREACHABLE, abort_reason="cancelled by the server")
    job = run(d.job("m1"))
    assert job is not None and job.status == JobStatus.ABORTED
    assert job.message == "cancelled by the server"


def test_after_a_restart_the_cancel_hook_does_not_abort_what_ended(tmp_path: Path) -> None:
    """(A migration libvirt still runs is aborted: test_libvirt_migrate_restart.py.)"""
    d = make(tmp_path, host(tmp_path, "a", domain(UUID)), abort_wait=5.0)
    left_running(tmp_path, UNREACHABLE)
    assert run(d.abort_jobs("cancel hook: agent restarted")) == []
    job = run(d.job("m1"))
    assert job is not None and (job.status, job.error_code) == (F, P.MIGRATION_FAILED)


def test_after_a_restart_a_leftover_definition_is_a_failed_cleanup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(M, "CLEANUP_GRACE", 0.0)  # (the grace: the test below)
    source = host(tmp_path, "a", domain(UUID, running=False))
    target = host(tmp_path, "b", domain(UUID, epoch=4))
    left_running(tmp_path, target)
    job = run(make(tmp_path, source).job("m1"))
    assert job is not None and (job.status, job.error_code) == (JobStatus.FAILED, P.CLEANUP_FAILED)
    assert job.result["migration"] == {
        "phase": "cleanup", "source": "a", "target": "b", "vm_on": "b"
    }  # fmt: skip


def test_a_leftover_definition_seen_first_is_given_time_to_go(tmp_path: Path) -> None:
    """libvirt's Confirm phase stops the source, releases its leases, then undefines it: a
    look in between sees a leftover about to go, and waits (CLEANUP_GRACE) before calling it
    a failed cleanup."""
    source = host(tmp_path, "a", domain(UUID, running=False))
    target = host(tmp_path, "b", domain(UUID, epoch=4))
    left_running(tmp_path, target)
    d = make(tmp_path, source)
    first = run(d.job("m1"))
    assert first is not None and (first.status, first.phase) == (JobStatus.RUNNING, "cleanup")
    seen = JobTable(tmp_path / "jobs").get("m1")
    assert seen is not None and seen.leftover_seen_at is not None
    host(tmp_path, "a")  # the source's libvirt undefines it meanwhile
    again = run(make(tmp_path, source).job("m1"))
    assert again is not None and again.status == JobStatus.COMPLETED
    assert again.result["migration"]["vm_on"] == "b"


def test_a_leftover_definition_still_there_after_the_grace_is_a_failed_cleanup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = host(tmp_path, "a", domain(UUID, running=False))
    left_running(tmp_path, host(tmp_path, "b", domain(UUID, epoch=4)))
    d = make(tmp_path, source)
    first = run(d.job("m1"))
    assert first is not None and first.status == JobStatus.RUNNING
    monkeypatch.setattr(M, "CLEANUP_GRACE", 0.0)  # (the grace is over)
    job = run(d.job("m1"))
    assert job is not None and (job.status, job.error_code) == (JobStatus.FAILED, P.CLEANUP_FAILED)


def test_after_a_restart_a_vm_on_neither_host_is_lost(tmp_path: Path) -> None:
    left_running(tmp_path, host(tmp_path, "b"))
    job = run(make(tmp_path, host(tmp_path, "a")).job("m1"))
    assert job is not None and (job.status, job.error_code) == (JobStatus.FAILED, P.MIGRATION_LOST)


def test_after_a_restart_an_unreachable_target_leaves_the_job_undecided(tmp_path: Path) -> None:
    left_running(tmp_path, UNREACHABLE)
    d = make(tmp_path, host(tmp_path, "a"))
    with pytest.raises(DriverTemporary, match="cannot connect"):
        run(d.job("m1"))
    assert (tmp_path / "jobs" / "m1.json").exists()
    assert json.loads((tmp_path / "jobs" / "m1.json").read_text())["status"] == "running"
    assert os.listdir(tmp_path / "jobs") == ["m1.json"]
