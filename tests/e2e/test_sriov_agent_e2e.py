"""SR-IOV with real processes (issue 22): `bollard up --sriov-pf` gives every sim agent a
simulated PF; its PFs and VFs reach the server's store with the agent's hello; a VF setting
made with `bollard node vf set` is applied on the host, and after a cold boot of the host
(the simulated NIC loses its VFs) the restarted agent applies it again."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bollard.agent.sriov.backend import SriovError
from bollard.agent.sriov.sim import SimSriov
from bollard.agent.sriov_agent import sim_state_file
from bollard.domain.sriov import VfSettings
from tests.e2e.conftest import Cli, local_cluster

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    root = tmp_path_factory.mktemp("sriov")
    pfs = ("--sriov-pf", "ens1f0:4:physnet1", "--sriov-pf", "ens2f0:2:storage:9000")
    with local_cluster(root, "--nodes", "2", "--sim-latency", "0.05", *pfs) as cli:
        yield cli


def stored_vfs(cli: Cli, node: str) -> list[dict[str, Any]]:
    """The node's VFs as the server's store has them (read from its database directly)."""
    with sqlite3.connect(cli.data_dir / "bollard.db") as db:
        db.row_factory = sqlite3.Row
        rows = db.execute(
            "SELECT v.pf, v.idx, v.pci, v.netdev, v.applied, p.physnet, p.mtu FROM sriov_vfs v"
            " JOIN sriov_pfs p ON p.node = v.node AND p.device = v.pf"
            " WHERE v.node = ? ORDER BY v.pf, v.idx",
            (node,),
        ).fetchall()
    return [dict(r) for r in rows]


def host_vf(cli: Cli, node: str, device: str, index: int) -> VfSettings:
    state = sim_state_file(cli.data_dir / "fabric", node)
    return asyncio.run(SimSriov(state).read(device, index))


def test_every_nodes_pfs_and_vfs_reach_the_store(cluster: Cli) -> None:
    for node in ("node1", "node2"):
        vfs = cluster.wait_until(
            f"{node}'s VFs in the store", lambda n=node: stored_vfs(cluster, n)
        )
        assert [(v["pf"], v["idx"], v["netdev"], v["physnet"]) for v in vfs] == [
            ("ens1f0", 0, "ens1f0v0", "physnet1"),
            ("ens1f0", 1, "ens1f0v1", "physnet1"),
            ("ens1f0", 2, "ens1f0v2", "physnet1"),
            ("ens1f0", 3, "ens1f0v3", "physnet1"),
            ("ens2f0", 0, "ens2f0v0", "storage"),
            ("ens2f0", 1, "ens2f0v1", "storage"),
        ]
        assert {v["mtu"] for v in vfs if v["pf"] == "ens2f0"} == {9000}
        assert len({v["pci"] for v in vfs}) == 6


def test_a_vf_setting_survives_a_cold_boot_and_an_agent_restart(cluster: Cli) -> None:
    cli = cluster
    cli.wait_until("node1's VFs in the store", lambda: stored_vfs(cli, "node1"))
    cli.ok("node", "vf", "set", "node1", "ens1f0/2", "--vlan", "100", "--trust", "on", "--wait")
    set_on_host = host_vf(cli, "node1", "ens1f0", 2)
    assert (set_on_host.vlan, set_on_host.trust) == (100, True)

    incarnation = cli.json("node", "show", "node1")["agent_incarnation"]
    SimSriov.reboot(sim_state_file(cli.data_dir / "fabric", "node1"))  # the host's cold boot
    with pytest.raises(SriovError, match="has no VF 2"):
        host_vf(cli, "node1", "ens1f0", 2)
    cli.ok("up", "--restart-process", "node1", "--data-dir", str(cli.data_dir))

    def reapplied() -> bool:
        try:
            vf = host_vf(cli, "node1", "ens1f0", 2)
        except SriovError:  # the agent has not set the VFs up again yet
            return False
        return (vf.vlan, vf.trust) == (100, True)

    cli.wait_until("node1's agent to re-apply VF 2's settings", reapplied, timeout=60)

    def stored_vlan() -> object:
        vf = next(v for v in stored_vfs(cli, "node1") if (v["pf"], v["idx"]) == ("ens1f0", 2))
        return json.loads(vf["applied"]).get("vlan")

    # The restarted agent's hello told the server what the host has now.
    def new_session() -> bool:
        node = cli.json("node", "show", "node1")
        return bool(node["connected"]) and node["agent_incarnation"] != incarnation

    cli.wait_until("node1's restarted agent to say hello", new_session, timeout=60)
    assert stored_vlan() == 100
    assert host_vf(cli, "node1", "ens1f0", 1).vlan == 0  # the others: as the device has them
    assert host_vf(cli, "node2", "ens1f0", 2).vlan == 0  # another node's VF is another VF


def test_a_pf_the_device_cannot_have_is_left_out(tmp_path: Path) -> None:
    """A PF asking for more VFs than the (simulated) device supports: the agent logs it in
    one line, leaves it out, and runs with the other."""
    pfs = ("--sriov-pf", "ens1f0:2:physnet1", "--sriov-pf", "ens2f0:65:physnet2")
    with local_cluster(tmp_path, "--nodes", "1", "--sim-latency", "0.05", *pfs) as cli:
        vfs = cli.wait_until("node1's VFs in the store", lambda: stored_vfs(cli, "node1"))
        assert {v["pf"] for v in vfs} == {"ens1f0"}
        log = (cli.data_dir / "logs" / "node1.log").read_text()
        assert "PF ens2f0 left out: VF count 65 is above the 64 the device supports" in log
