"""Moving a running VM's disk to another pool while the guest runs (volume_migrate with
`live`): the VM's host block-copies the disk to a new file of the target pool, mirroring the
guest's writes, and pivots once in sync (CloudStack's MigrateVolume on KVM does the same).

The new file has a name of its own (``<stem>-m<task>.<format>``), so the file the guest uses is
enough to tell whether the pivot happened. When the command's outcome is unknown (a lost
answer, an agent killed mid-copy, a server restart), the step asks the host which file the
running domain really uses for the device: the new one, the move is done (committed); the old
one, it did not happen, and the partial target is removed; no answer, the step fails without
guessing, and its undo asks again before it removes anything (never the file the guest uses).
"""

from __future__ import annotations

import posixpath
from typing import Any

from bollard.domain.errors import BollardError, NodeUnavailable, StepFailed
from bollard.domain.states import CommandType
from bollard.server import vm_disks
from bollard.server.tasks.context import StepContext
from bollard.server.tasks.flows import volume_common as vc
from bollard.server.tasks.flows.migrate_progress import with_progress
from bollard.server.tasks.flows.volumes import COPY_TIMEOUT, _delete
from bollard.server.tasks.params import VolumeCopyParams
from bollard.store import vms

Ctx = StepContext[VolumeCopyParams]


def live_file(file: str, task_id: str) -> str:
    """The new file of a disk moved live: its own name, so the two are told apart."""
    stem, dot, fmt = file.rpartition(".")
    if not dot:
        stem, fmt = file, "qcow2"
    return f"{stem[:100]}-m{task_id.replace('-', '')[:8]}.{fmt}"


async def _vm(ctx: Ctx) -> tuple[str, str, int]:
    v = await vc.volume(ctx, ctx.params.volume_id)
    if v.vm_uuid is None or ctx.params.device is None:
        raise StepFailed(f"volume {v.name} is no longer a disk of a VM: nothing to move live")
    uuid = v.vm_uuid
    vm = await ctx.read(lambda conn: vms.get_by_uuid(conn, uuid))
    if vm.node is None:
        raise StepFailed(f"VM {vm.name} is on no node")
    return vm.uuid, vm.node, vm.epoch


async def _uses(ctx: Ctx, node: str, uuid: str) -> str | None:
    """The file the VM's device uses now on `node` (None: the host did not say)."""
    answer = await ctx.inspect(node, uuid, disks=True)
    if answer is None or answer.disks is None:
        return None
    for disk in answer.disks:
        if disk.get("device") == ctx.params.device:
            return str(disk.get("path") or "")
    return ""


async def live_move(ctx: Ctx) -> dict[str, Any]:
    p = ctx.params
    uuid, node, epoch = await _vm(ctx)
    v = await vc.volume(ctx, p.volume_id)
    target = await vc.pool(ctx, p.pool)
    args = {
        "device": p.device, "target_pool": target.ref(), "target_file": p.file,
        "format": v.format,
    }  # fmt: skip
    run = ctx.command("move", node, CommandType.VOLUME_MOVE_LIVE, args, vm_uuid=uuid,
                      epoch=epoch, timeout=COPY_TIMEOUT)  # fmt: skip
    try:
        result = await with_progress(ctx, "move", run)  # type: ignore[arg-type]
    except BollardError as exc:
        if isinstance(exc, NodeUnavailable):
            raise  # not sent yet, or its host is away: the step tries again
        uses = await _uses(ctx, node, uuid)
        if uses is not None and posixpath.basename(uses) == p.file:
            await ctx.note("volume.move_found",
                           f"the VM uses the new file already ({exc.message})",
                           volume=p.volume)  # fmt: skip
            return {"moved": True, "recovered_from": exc.message, "path": uses}
        raise
    return {"moved": True, **result}


async def undo_live_move(ctx: Ctx) -> None:
    """Before the switch: make sure the guest uses the old file, then remove the new one."""
    p = ctx.params
    uuid, node, _epoch = await _vm(ctx)
    uses = await _uses(ctx, node, uuid)
    if uses is None:
        raise StepFailed(f"{node} does not say which file the VM uses: nothing removed")
    if posixpath.basename(uses) == p.file:
        raise StepFailed(
            f"the VM uses the new file {p.file} on {node}: it is not removed (the volume is "
            "left in error for an operator: the new file holds the current data)"
        )
    target = await vc.pool(ctx, p.pool)
    host = await vc.host_for(ctx, target, p.node, prefer=node)
    await _delete(ctx, "undo-move", host, {"pool": target.ref(), "file": p.file})


async def live_lock(ctx: Ctx) -> dict[str, Any]:
    """After the switch: the running VM's host takes the locks of its shared volumes (this one
    among them, if it moved into a shared pool; a start of a running VM changes nothing
    else)."""
    uuid, node, epoch = await _vm(ctx)
    locks = await ctx.read(lambda conn: vm_disks.lock_args(conn, uuid, node, epoch))
    if locks is None:
        return {"locks": "none"}
    return await ctx.command("lock", node, CommandType.START, {"locks": locks},
                             vm_uuid=uuid, epoch=epoch)  # fmt: skip
