"""The sim fabric: atomic writes, concurrent mutation from several processes, corrupt files."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from bollard.domain.states import PowerState
from bollard.durable import TMP_PREFIX
from bollard.sim import Fabric, HostPower, SimVm
from bollard.sim.files import write_json_atomic


def _vm(uuid: str = "vm-1", **kw: object) -> SimVm:
    fields: dict[str, object] = {"uuid": uuid, "name": f"name-{uuid}", "vcpus": 2}
    fields.update(memory_mb=1024, **kw)
    return SimVm.model_validate(fields)


def test_ensure_host_creates_once_and_keeps_boot_id(tmp_path: Path) -> None:
    host = Fabric(tmp_path).host("node-1")
    assert host.record() is None
    first = host.ensure_host(8, 4096)
    assert first.power == HostPower.ON
    again = host.ensure_host(16, 8192)
    assert again.boot_id == first.boot_id
    assert (again.vcpus, again.memory_mb) == (16, 8192)
    on_disk = json.loads((tmp_path / "hosts" / "node-1" / "host.json").read_text())
    assert on_disk["boot_id"] == first.boot_id
    assert on_disk["vcpus"] == 16
    assert Fabric(tmp_path).nodes() == ["node-1"]


def test_power_cycle_stops_vms_and_changes_boot_id(tmp_path: Path) -> None:
    host = Fabric(tmp_path).host("n")
    boot = host.ensure_host(4, 1024).boot_id
    host.put_vm(_vm(power=PowerState.RUNNING))
    assert host.power_off().power == HostPower.OFF
    assert [v.power for v in host.list_vms()] == [PowerState.STOPPED]
    rec = host.power_on()
    assert rec.power == HostPower.ON
    assert rec.boot_id != boot


def test_put_get_update_delete(tmp_path: Path) -> None:
    host = Fabric(tmp_path).host("n")
    host.put_vm(_vm("b"))
    host.put_vm(_vm("a"))
    assert [v.uuid for v in host.list_vms()] == ["a", "b"]
    got = host.get_vm("a")
    assert got is not None and got.name == "name-a"
    updated = host.update_vm("a", lambda v: v.model_copy(update={"epoch": 7}))
    assert updated is not None and updated.epoch == 7
    assert host.get_vm("a") == updated
    assert host.update_vm("nope", lambda v: v) is None
    assert host.delete_vm("a") is True
    assert host.delete_vm("a") is False
    assert host.get_vm("a") is None


def test_path_components_are_validated(tmp_path: Path) -> None:
    fabric = Fabric(tmp_path)
    with pytest.raises(ValueError):
        fabric.host("../evil")
    with pytest.raises(ValueError):
        fabric.host("n").get_vm("../../x")


def test_atomic_write_leaves_no_temp_and_keeps_old_content_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "d" / "f.json"
    write_json_atomic(target, {"v": 1})
    with pytest.raises(TypeError):
        write_json_atomic(target, {"v": object()})  # not serialisable
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in target.parent.iterdir()] == ["f.json"]


def test_corrupt_and_partial_files_are_skipped_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    host = Fabric(tmp_path).host("n")
    host.ensure_host(4, 1024)
    host.put_vm(_vm("good"))
    (host.vms_dir / "torn.json").write_text('{"uuid": "torn", "na')
    (host.vms_dir / "wrong.json").write_text(json.dumps({"uuid": "wrong"}))  # missing fields
    (host.vms_dir / "list.json").write_text("[1, 2]")
    (host.vms_dir / f"{TMP_PREFIX}good.json.123.abc").write_text("{")  # writer in progress
    with caplog.at_level(logging.WARNING, logger="bollard.sim"):
        vms = host.list_vms()
        assert host.get_vm("torn") is None
    assert [v.uuid for v in vms] == ["good"]
    messages = " ".join(r.getMessage() for r in caplog.records)
    for name in ("torn.json", "wrong.json", "list.json"):
        assert name in messages
    assert TMP_PREFIX not in messages
    (host.host_file).write_text("not json")
    assert host.record() is None


def _bump_epochs(root: str, uuid: str, times: int) -> None:
    host = Fabric(root).host("shared")
    for _ in range(times):
        host.update_vm(uuid, lambda v: v.model_copy(update={"epoch": v.epoch + 1}))


def _define_many(root: str, prefix: str, count: int) -> None:
    host = Fabric(root).host("shared")
    for i in range(count):
        host.put_vm(_vm(f"{prefix}-{i}"))


def _run_processes(target: Callable[..., None], args_list: list[tuple[object, ...]]) -> None:
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=target, args=args) for args in args_list]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    for p in procs:
        if p.is_alive():
            p.kill()
            pytest.fail("fabric worker process did not finish within 60s")
        assert p.exitcode == 0


def test_concurrent_processes_do_not_lose_updates(tmp_path: Path) -> None:
    host = Fabric(tmp_path).host("shared")
    host.ensure_host(4, 1024)
    host.put_vm(_vm("counter"))
    workers, per_worker = 4, 50
    _run_processes(_bump_epochs, [(str(tmp_path), "counter", per_worker)] * workers)
    vm = host.get_vm("counter")
    assert vm is not None
    assert vm.epoch == workers * per_worker


def test_concurrent_processes_defining_vms_all_land(tmp_path: Path) -> None:
    workers, per_worker = 4, 25
    _run_processes(_define_many, [(str(tmp_path), f"p{i}", per_worker) for i in range(workers)])
    vms = Fabric(tmp_path).host("shared").list_vms()
    assert len(vms) == workers * per_worker
    leftovers = [n for n in os.listdir(tmp_path / "hosts" / "shared" / "vms") if n[0] == "."]
    assert leftovers == []


def test_lock_is_reentrant_within_a_thread(tmp_path: Path) -> None:
    fabric = Fabric(tmp_path, lock_timeout=1.0)
    host = fabric.host("n")
    with fabric.lock():
        host.put_vm(_vm("x"))  # takes the lock again inside
        host.update_vm("x", lambda v: v)
    assert host.get_vm("x") is not None
