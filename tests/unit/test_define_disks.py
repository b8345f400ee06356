"""The DEFINE commands of the create and HA restart flows carry the VM's local disks and
its NICs."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from bollard.domain.models import Disk, Nic, Task, Vm
from bollard.domain.states import CommandType, DesiredPower, PowerState, TaskStatus, VmState
from bollard.server.tasks.context import StepContext
from bollard.server.tasks.flows.ha import HaRestartFlow
from bollard.server.tasks.flows.vm_power import CreateFlow
from bollard.server.tasks.params import CreateParams, HaRestartParams, TaskParams

NOW = datetime(2026, 11, 21, tzinfo=UTC)
VM = Vm(
    uuid="u1", name="web1", node="node1", vcpus=2, memory_mb=512, epoch=3,
    vm_state=VmState.BUILDING, task_state=None, task_id="t1",
    desired_power=DesiredPower.RUNNING, observed_power=PowerState.UNKNOWN, observed_at=None,
    observed_seq=0, fault=None, created_at=NOW, updated_at=NOW,
    disks=(Disk(10240), Disk(512)),
    nics=(Nic("52:54:00:00:00:01", bridge="br0", model="e1000"),
          Nic("52:54:00:00:00:02", network="default")),
)  # fmt: skip
NIC_ARGS = [
    {"mac": "52:54:00:00:00:01", "bridge": "br0", "model": "e1000"},
    {"mac": "52:54:00:00:00:02", "network": "default", "model": "virtio"},
]


@dataclass
class FakeContext:
    """Just what the define steps use of a StepContext; records the commands sent."""

    task: Task
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    sent: list[tuple[str, CommandType, dict[str, Any] | None]] = field(default_factory=list)

    @property
    def params(self) -> TaskParams:
        model = {"create": CreateParams, "ha_restart": HaRestartParams}[self.task.type]
        return model.model_validate(self.task.params)

    async def write(self, fn: Any) -> None:
        return None  # the task-state update is not this test's business

    async def vm(self) -> Vm:
        return VM

    async def command(
        self, key: str, node: str, type_: CommandType, args: dict[str, Any] | None, **_: Any
    ) -> dict[str, Any]:
        self.sent.append((node, type_, args))
        return {}


def _task(type_: str, params: dict[str, Any]) -> Task:
    return Task(
        id="t1", type=type_, vm_uuid="u1", vm_name="web1", node="node1",
        state=TaskStatus.RUNNING, params=params, error=None, created_at=NOW, updated_at=NOW,
        finished_at=None,
    )  # fmt: skip


def _define_args(ctx: FakeContext) -> dict[str, Any] | None:
    [(_, type_, args)] = ctx.sent
    assert type_ is CommandType.DEFINE
    return args


def test_create_sends_the_disks_and_nics_of_its_params() -> None:
    disks = [{"size_mb": 10240}, {"size_mb": 512}]
    params = {"vcpus": 2, "memory_mb": 512, "disks": disks, "nics": NIC_ARGS}
    ctx = FakeContext(_task("create", params))
    asyncio.run(CreateFlow()._define(cast(StepContext, ctx)))
    assert _define_args(ctx) == {
        "name": "web1",
        "vcpus": 2,
        "memory_mb": 512,
        "disks": disks,
        "nics": NIC_ARGS,
    }


def test_a_create_task_from_before_disks_and_nics_sends_none() -> None:
    ctx = FakeContext(_task("create", {"vcpus": 2, "memory_mb": 512, "start": False}))
    asyncio.run(CreateFlow()._define(cast(StepContext, ctx)))
    args = _define_args(ctx) or {}
    assert (args["disks"], args["nics"]) == ([], [])


def test_an_ha_restart_defines_the_vms_disks_and_nics_on_its_target() -> None:
    ctx = FakeContext(_task("ha_restart", {"from": "node1", "epoch": 2}))
    ctx.results["place"] = {"target": "node2"}
    asyncio.run(HaRestartFlow()._define(cast(StepContext, ctx)))
    [(node, _, args)] = ctx.sent
    assert node == "node2"
    assert args == {
        "name": "web1",
        "vcpus": 2,
        "memory_mb": 512,
        "disks": [{"size_mb": 10240}, {"size_mb": 512}],
        "nics": NIC_ARGS,
    }
