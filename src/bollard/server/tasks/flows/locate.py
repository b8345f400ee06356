"""Where is a VM? Asked of both hosts of a migration whose outcome is unknown or failed."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from bollard.domain.protocol import InspectResult, VmReport
from bollard.domain.states import PowerState
from bollard.server.clock import Deadline
from bollard.server.tasks.context import StepContext

RETRY_EVERY = 1.0  # backoff between two rounds of questions, while a host is silent or busy


class Where(StrEnum):
    SOURCE = "source"
    TARGET = "target"
    BOTH = "both"
    NEITHER = "neither"
    UNKNOWN = "unknown"  # a host did not answer before the deadline


@dataclass(frozen=True)
class Location:
    where: Where
    source: VmReport | None
    target: VmReport | None


def _decide(src: VmReport | None, tgt: VmReport | None, live: bool, new_epoch: int) -> Where:
    if live:
        on_src = src is not None and src.power is PowerState.RUNNING
        on_tgt = tgt is not None and tgt.power is PowerState.RUNNING
    else:
        # A stopped VM is where its definition is; a copy on the target counts once it
        # carries the new epoch (the move finished there).
        on_tgt = tgt is not None and tgt.epoch >= new_epoch
        on_src = src is not None and not on_tgt
    if on_src and on_tgt:
        return Where.BOTH
    if on_tgt:
        return Where.TARGET
    if on_src:
        return Where.SOURCE
    return Where.NEITHER


def _one_sided(
    src: InspectResult | None, tgt: InspectResult | None, live: bool, new_epoch: int
) -> Location | None:
    """One host answers conclusively while the other is silent. The switchover is atomic
    (the source stops owning the VM in the same act that makes the target run it with the
    new epoch), so: a source that runs the VM with no migration in progress means the target
    does not; a target that runs it with the new epoch means the source does not."""
    if not live:
        return None
    if src is not None and tgt is None and not src.job_running:
        vm = src.vm
        if vm is not None and vm.power is PowerState.RUNNING and vm.epoch < new_epoch:
            return Location(Where.SOURCE, vm, None)
    if tgt is not None and src is None and not tgt.job_running:
        vm = tgt.vm
        if vm is not None and vm.power is PowerState.RUNNING and vm.epoch >= new_epoch:
            return Location(Where.TARGET, None, vm)
    return None


async def locate(
    ctx: StepContext[Any],
    uuid: str,
    source: str,
    target: str,
    *,
    live: bool,
    new_epoch: int,
    deadline: Deadline,
) -> Location:
    """Ask both hosts until both answer and neither is still migrating the VM, or until the
    deadline passes (then UNKNOWN)."""
    while True:
        answers: dict[str, InspectResult | None] = await ctx.inspect_all([source, target], uuid)
        src, tgt = answers[source], answers[target]
        settled = src is not None and tgt is not None and not (src.job_running or tgt.job_running)
        if settled:
            assert src is not None and tgt is not None
            return Location(_decide(src.vm, tgt.vm, live, new_epoch), src.vm, tgt.vm)
        one_sided = _one_sided(src, tgt, live, new_epoch)
        if one_sided is not None:
            return one_sided
        if deadline.passed:
            return Location(Where.UNKNOWN, src.vm if src else None, tgt.vm if tgt else None)
        await ctx.pause(RETRY_EVERY)
