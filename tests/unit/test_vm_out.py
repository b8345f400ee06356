"""`VmOut.of` builds its answer without validation (api/unvalidated.py): for VMs of every
kind it must be the validated model exactly, each value of the type validation gives back
(a float, not an int, for a float field; an enum member, not its string), so that the JSON
is the same bytes and serializing it warns of nothing."""

from __future__ import annotations

import itertools
import warnings
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from bollard.domain.flavors import FlavorRef
from bollard.domain.migrations import Migration, MigrationStatus, MigrationType
from bollard.domain.models import HostVm, Nic, Vm
from bollard.domain.states import DesiredPower, PowerState, TaskState, VmState
from bollard.domain.storage import Volume, VolumeState
from bollard.server.api.schemas import NodesSeen, VmOut, VmPage
from bollard.server.api.unvalidated import built

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
FLAVOR = FlavorRef("f1", "small", 2, 2048, 10240, {"hw:cpu": "dedicated"})


def _vm(**changes: Any) -> Vm:
    vm = Vm(
        uuid="u1", name="vm1", node="node1", vcpus=1, memory_mb=256, epoch=1,
        vm_state=VmState.ACTIVE, task_state=None, task_id=None,
        desired_power=DesiredPower.RUNNING, observed_power=PowerState.RUNNING, observed_at=NOW,
        observed_seq=1, fault=None, created_at=NOW - timedelta(days=1), updated_at=NOW,
    )  # fmt: skip
    return replace(vm, **changes)


def _volume(vm_uuid: str, device: str | None, size_mb: int) -> Volume:
    return Volume(
        id=f"vol-{device}", name=f"vm1-{device}", pool="local", node="node1", file="/v",
        format="qcow2", size_mb=size_mb, state=VolumeState.ATTACHED, vm_uuid=vm_uuid,
        device=device, task_id=None, delete_with_vm=True, fault=None, created_at=NOW,
        updated_at=NOW,
    )  # fmt: skip


def _resize(vm_uuid: str) -> Migration:
    return Migration(
        id="m1", vm_uuid=vm_uuid, vm_name="vm1", type=MigrationType.RESIZE, source="node1",
        dest="node2", status=MigrationStatus.FINISHED, task_id=None, old_flavor=None,
        new_flavor=FLAVOR, source_hold=None, error=None, created_at=NOW, updated_at=NOW,
        finished_at=None,
    )  # fmt: skip


NICS = (
    Nic(mac="52:54:00:00:00:01", network="default"),
    Nic(mac="52:54:00:00:00:02", bridge="br0", model="e1000"),
    Nic(mac="52:54:00:00:00:03", sriov="physnet1", mode="hostdev"),
)


def _vms() -> list[Vm]:
    """VMs with every state, task state, power, HA request and optional part."""
    found = [
        _vm(uuid=f"s{i}", vm_state=state, task_state=task, desired_power=desired)
        for i, (state, task, desired) in enumerate(
            itertools.product(VmState, [None, *TaskState], DesiredPower)
        )
    ]
    found += [_vm(uuid=f"p{i}", observed_power=power) for i, power in enumerate(PowerState)]
    found += [
        _vm(uuid=f"h{i}", ha=ha, ha_hold=hold, ha_group=group, max_restart=restart)
        for i, (ha, hold, group, restart) in enumerate(
            itertools.product([None, "restart", "none"], [None, "ignored", "error"],
                              [None, "g1"], [None, 3])
        )
    ]  # fmt: skip
    found += [
        _vm(uuid="full", nics=NICS, flavor=FLAVOR, node_limit=["node1", "node2"],
            node_selector="mem", on_lost="start", previous_node="node2", autostart=True,
            migration_method="live", fault="it broke", task_id="t1", hidden=True,
            ha_priority=-5, max_relocate=0, ha_restarts=2, ha_relocates=1, observed_at=None),
        _vm(uuid="unplaced", node=None, vm_state=VmState.STOPPED),
        _vm(uuid="silent", node="node2"),
        _vm(uuid="unknown-node", node="node9"),
        _vm(uuid="by-hand", flavor=FlavorRef(None, None, 1, 256, 0)),
    ]  # fmt: skip
    return found


def _seen(vms: list[Vm]) -> NodesSeen:
    return NodesSeen(
        last={"node1": NOW - timedelta(seconds=1), "node2": NOW - timedelta(seconds=60)},
        # an int where the column is a float: shown as a float, as validation made it
        host_time={"node1": 1700000000.25, "node2": 1700000000},
        stale_after=15.0,
        disks={"full": [_volume("full", "vda", 10240), _volume("full", None, 5)]},
        resizes={"full": _resize("full")},
    )


def _exactly(built: Any, validated: Any, where: str) -> None:
    """Equal, and of the same types all the way down."""
    assert type(built) is type(validated), where
    if isinstance(validated, BaseModel):
        assert built.model_fields_set == validated.model_fields_set, where
        for name in type(validated).model_fields:
            _exactly(getattr(built, name), getattr(validated, name), f"{where}.{name}")
    elif isinstance(validated, list):
        assert len(built) == len(validated), where
        for i, (b, v) in enumerate(zip(built, validated, strict=True)):
            _exactly(b, v, f"{where}[{i}]")
    elif isinstance(validated, dict):
        assert list(built) == list(validated), where
        for key in validated:
            _exactly(built[key], validated[key], f"{where}[{key!r}]")
    else:
        assert built == validated, where


def test_a_vm_built_unvalidated_is_the_validated_model() -> None:
    vms = _vms()
    seen = _seen(vms)
    observed = HostVm("node1", "s0", "vm1", PowerState.RUNNING, 2, 1024, 1, 9, NOW)
    for vm in vms:
        for seen_by in (None, observed):
            out = VmOut.of(vm, seen, NOW, seen_by)
            validated = VmOut.model_validate(out.model_dump())
            _exactly(out, validated, vm.uuid)
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # pydantic warns of a value not of its type
                assert out.model_dump_json() == validated.model_dump_json()
    full = VmOut.of(vms[-5], seen, NOW)
    assert (full.host_reported_at, type(full.host_reported_at)) == (1700000000.25, float)
    silent = VmOut.of(vms[-3], seen, NOW)
    assert (silent.status, silent.host_reported_at) == ("UNKNOWN", 1700000000.0)
    assert [d.device for d in full.disks] == ["vda", ""]
    assert full.resize is not None and full.resize.new_flavor is not None


def test_a_page_of_them_is_the_same_json() -> None:
    vms = _vms()
    seen = _seen(vms)
    page = VmPage(items=[VmOut.of(vm, seen, NOW) for vm in vms], next_cursor="c", total=999)
    validated = VmPage.model_validate(page.model_dump())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert page.model_dump_json() == validated.model_dump_json()


class _Point(BaseModel):
    x: float
    label: str = "p"


def test_the_check_finds_a_value_not_of_its_type() -> None:
    """(What the first test relies on: an int in a float field is caught.)"""
    wrong = built(_Point, {"x": 1, "label": "p"})
    with pytest.raises(AssertionError):
        _exactly(wrong, _Point.model_validate(wrong.model_dump()), "point")
    _exactly(built(_Point, {"x": 1.0, "label": "p"}), _Point(x=1, label="p"), "point")
