"""What the SR-IOV move tests check after every outcome (tests/api/test_sriov_moves.py): the
store's VF holders, the VMs' NIC lists and what each live host's driver says its defined VMs
use all agree.

- every SR-IOV NIC of a VM holds exactly one VF on the VM's node (and, while a resize waits
  to be confirmed or reverted, one on its source too, for the stopped copy there), found by
  its MAC; the VM holds no other VF, and no claim is left pending (no task owns one);
- on each live host, the VFs its defined VMs use (`vf_users`, as the sim driver answers the
  agent) are exactly the VFs the store gives a VM on that node.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from bollard.agent.drivers.sim import SimDriver
from bollard.domain.sriov import PfConfig
from bollard.store import sriov
from bollard.store.db import Database
from tests.support.cluster import AgentThread, ServerThread, wait_until

PHYSNET = "fast"


def pf(vfs: int = 2) -> PfConfig:
    return PfConfig(device="ens1", vfs=vfs, physnet=PHYSNET)


def sriov_agent(
    server: ServerThread, node: str, base: Path, vfs: int, **options: Any
) -> AgentThread:
    """A sim agent with PF ens1 on physnet `fast` (`vfs` VFs), once its PFs are in the store."""
    agent = AgentThread(server, node, base, sriov_pfs=(pf(vfs),) if vfs else (), **options)
    wait_until(lambda: server.client.get(f"/nodes/{node}").json()["connected"], f"{node} up")
    if vfs:
        wait_until(lambda: len(vfs_on(server.runtime.db, node)) == vfs, f"{node}'s VFs stored")
    return agent


def vfs_on(db: Database, node: str) -> list[sriov.VfRow]:
    with db.read() as conn:
        return sriov.vfs_of(conn, node)


def holders(db: Database, uuid: str) -> list[tuple[str, str | None]]:
    """(node, MAC) of every VF the VM holds, sorted."""
    with db.read() as conn:
        return sorted((v.node, v.mac) for v in sriov.holders(conn, uuid))


def free(db: Database) -> dict[str, int]:
    with db.read() as conn:
        return sriov.free_counts(conn, PHYSNET)


def host_users(fabric_dir: Path, node: str) -> dict[str, str]:
    """{VF PCI address: VM uuid}: what node's sim driver says its defined VMs use."""
    return asyncio.run(SimDriver(fabric_dir, node, latency=0).vf_users())


def store_users(db: Database, node: str) -> dict[str, str]:
    return {v.pci: v.used_by for v in vfs_on(db, node) if v.used_by is not None}


def assert_agree(
    c: httpx.Client, db: Database, fabric_dir: Path, live: list[str],
    resizing: dict[str, str] | None = None,
) -> None:  # fmt: skip
    """The checks of the module's doc. `resizing`: VM name -> the source node a resize of it
    waits on (its VFs there are its own too); `live`: the hosts whose drivers are asked."""
    resizing = resizing or {}
    nodes = {n["name"] for n in c.get("/nodes").json()["items"]}
    with db.read() as conn:
        pending = [v for n in sorted(nodes) for v in sriov.vfs_of(conn, n) if v.task_id]
    assert pending == [], f"claims left pending: {pending}"
    vms = c.get("/vms", params={"limit": 1000}).json()["items"]
    for vm in vms:
        macs = [n["mac"] for n in vm["nics"] if n.get("sriov")]
        where = [vm["node"], *([resizing[vm["name"]]] if vm["name"] in resizing else [])]
        expected = sorted((node, mac) for node in where for mac in macs)
        assert holders(db, vm["uuid"]) == expected, f"VM {vm['name']}"
    held_by_listed = Counter(u for n in nodes for u in store_users(db, n).values())
    listed = {vm["uuid"] for vm in vms}
    assert set(held_by_listed) <= listed, "a VF is held by a VM that is not listed"
    for node in live:
        on_host, in_store = host_users(fabric_dir, node), store_users(db, node)
        assert on_host == in_store, f"host {node}: {on_host} != store {in_store}"
