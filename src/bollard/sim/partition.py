"""Simulated network partition: a sim host's agent is cut off from the server.

``bollard sim partition NODE`` sets a flag on the host's record in the fabric; the host stays
on and its VMs keep running. The agent of a sim host reads the flag (``PartitionFlag``)
before every connection attempt and while connected (at least once per heartbeat): while it
is set, the agent closes its connection and does not reconnect, and it stops nothing on the
host. ``bollard sim heal NODE`` clears the flag; the agent, which keeps reading it, then
reconnects by itself.

To the server this looks like a host that fell silent: it is declared dead and fenced, which
is the scenario the never-twice rule has to survive (a host that is cut off but still runs
its VMs). The flag is independent of power: powering a host off or on leaves it as it is.

Plain blocking functions; ``PartitionFlag.check`` runs its read in a thread.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from bollard.sim.fabric import Fabric, SimHost
from bollard.sim.models import SimHostRecord

__all__ = ["PartitionChange", "PartitionFlag", "heal_host", "is_partitioned", "partition_host"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PartitionChange:
    """What a partition or heal did."""

    record: SimHostRecord  # the host record after it
    changed: bool  # False: the host already was (or was not) partitioned


def _set(fabric: Fabric, node: str, partitioned: bool) -> PartitionChange:
    host = fabric.host(node)
    with fabric.lock():
        rec = host.record()
        if rec is None:
            raise LookupError(f"sim host {node} does not exist in {fabric.root}")
        if rec.partitioned == partitioned:
            return PartitionChange(rec, changed=False)
        rec = host.set_partitioned(partitioned)
    log.warning("sim host %s %s", node, "partitioned" if partitioned else "healed")
    return PartitionChange(rec, changed=True)


def partition_host(fabric: Fabric, node: str) -> PartitionChange:
    """Cut sim host ``node``'s agent off from the server (idempotent). LookupError if there
    is no such host."""
    return _set(fabric, node, True)


def heal_host(fabric: Fabric, node: str) -> PartitionChange:
    """Lift the partition of sim host ``node`` (idempotent). LookupError if there is no such
    host."""
    return _set(fabric, node, False)


def is_partitioned(host: SimHost) -> bool:
    """Whether the host is partitioned; False when it has no (readable) record."""
    rec = host.record()
    return rec is not None and rec.partitioned


class PartitionFlag:
    """The agent's view of its host's partition flag (read without the fabric lock: the
    record is replaced atomically)."""

    def __init__(self, fabric_dir: Path | str, node: str) -> None:
        self.host = Fabric(fabric_dir).host(node)

    def __repr__(self) -> str:
        return f"PartitionFlag({self.host.node!r})"

    def read(self) -> bool:
        """Whether the host is partitioned. A fabric that cannot be read counts as not
        partitioned (logged): the agent then behaves as it would without the flag."""
        try:
            return is_partitioned(self.host)
        except OSError as exc:
            log.warning("cannot read the partition flag of %s: %s", self.host.node, exc)
            return False

    async def check(self) -> bool:
        """``read`` in a worker thread."""
        return await asyncio.to_thread(self.read)
