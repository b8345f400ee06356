"""Whether a dead node is fenced, or why not (issue 21).

A dead node is fenced unless one of these holds; then it stays dead, nothing of it is
recovered, and a `node.fence_skipped` event says why (once for each reason, while the node
stays dead):

- **maintenance**: the operator put the node in maintenance (`bollard node maintenance NODE
  on`): fencing of it is suspended until maintenance is off;
- **frozen**: its agent announced a clean shutdown or reboot and the node's shutdown policy
  (or the setting `ha.shutdown_policy`) says freeze for it: its VMs wait for it to return;
- **idle**: it owns no VM that HA would restart (policy restart, not ignored, not in error)
  and its host holds no volume lock (a running VM with a volume of a shared pool), unless
  the setting `fencing.idle_nodes` is on: fencing it would protect nothing.

Cluster-wide switches (`fencing.enabled`, `cluster.maintenance`) are the callers' to check.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from bollard.domain.errors import NotFound
from bollard.domain.ha import ShutdownKind, ShutdownPolicy, shutdown_action
from bollard.domain.models import Node
from bollard.domain.states import NodeHealth
from bollard.server.clock import Clock
from bollard.server.ports import UnitOfWork
from bollard.store import events, nodes, vms, volumes

log = logging.getLogger(__name__)

FENCE_SKIPPED = "node.fence_skipped"


def frozen(node: Node, setting: str) -> bool:
    """Whether the node's announced clean shutdown freezes it (no fence, no recovery):
    `setting` is `ha.shutdown_policy`, used when the node has no policy of its own."""
    if not node.shutdown_kind:
        return False
    try:
        policy = ShutdownPolicy(node.shutdown_policy or setting)
        kind = ShutdownKind(node.shutdown_kind)
    except ValueError:
        return False  # a value this server does not know: fence as for a crash
    return shutdown_action(policy, kind) is ShutdownPolicy.FREEZE


def _guards_something(conn: Connection, node: str) -> str | None:
    """What a fence of the node would protect (a short phrase), or None: an HA VM it owns, or
    a volume lock its host holds."""
    owned = vms.on_node(conn, node)
    ha = sorted(v.name for v in owned if v.ha_policy == "restart" and v.ha_managed)
    if ha:
        return f"HA VM {ha[0]}"
    for vm_volumes in volumes.of_vms(conn, [v.uuid for v in owned]).values():
        for volume in vm_volumes:
            if volume.lock_node == node:
                return f"the lock of volume {volume.name}"
    return None


def skip_reason(conn: Connection, node: Node, settings: dict[str, Any]) -> str | None:
    """Why the dead node must not be fenced now (one line), or None: fence it."""
    if node.maintenance:
        return (
            f"in maintenance: node {node.name} is not fenced until `bollard node maintenance "
            f"{node.name} off`"
        )
    if frozen(node, str(settings["ha.shutdown_policy"])):
        return (
            f"frozen: its host announced a clean {node.shutdown_kind} and its shutdown policy "
            "is freeze for it; its VMs wait for it to come back"
        )
    if not settings["fencing.idle_nodes"] and _guards_something(conn, node.name) is None:
        return "idle: no HA VM, no lock (fencing.idle_nodes is off)"
    return None


class FenceGate:
    """Decides, for a dead node, between a fence and a recorded skip (see the module)."""

    def __init__(self, *, work: UnitOfWork, clock: Clock) -> None:
        self.work = work
        self.clock = clock
        # node -> (its health_since, the reason last recorded): one event per reason and
        # dead spell, on this server.
        self._noted: dict[str, tuple[datetime | None, str]] = {}

    def check(self, node: str, settings: dict[str, Any]) -> bool:
        """Blocking (through `UnitOfWork.run`). True: fence the node now; False: it is not
        dead, or a reason holds it back (recorded as an event the first time)."""
        with self.work.write() as conn:
            try:
                record = nodes.get(conn, node)
            except NotFound:
                return False
            if record.health is not NodeHealth.DEAD:
                self._noted.pop(node, None)
                return False
            reason = skip_reason(conn, record, settings)
            if reason is None:
                self._noted.pop(node, None)
                return True
            if self._noted.get(node) != (record.health_since, reason):
                self._noted[node] = (record.health_since, reason)
                events.add(conn, FENCE_SKIPPED, f"node {node} is dead and not fenced: {reason}",
                           self.clock.now(), node=node,
                           data={"reason": reason.split(":")[0]})  # fmt: skip
                log.warning("node %s is dead and not fenced: %s", node, reason)
            return False
