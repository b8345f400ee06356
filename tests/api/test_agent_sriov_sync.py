"""A node's SR-IOV reaches the store through its agent's hello (issue 22), on SQLite and
PostgreSQL: a real server and real sim agents in threads. The PFs and VFs set up at the
agent's start are recorded; a VF_SET command changes the host; a cold boot of the host and an
agent restart re-apply the change; a PF taken out of the configuration leaves the store; an
agent that does not report SR-IOV (an older one) leaves the records alone, and a report the
store cannot hold is refused without keeping the node from registering."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from bollard.agent.sriov.backend import SriovError
from bollard.agent.sriov.sim import SimSriov
from bollard.agent.sriov_agent import sim_state_file
from bollard.domain.errors import CommandFailed
from bollard.domain.ids import new_uuid
from bollard.domain.protocol import AGENT_PATH, Capacity, Hello
from bollard.domain.sriov import PfConfig, SriovPf, SriovVf
from bollard.domain.states import CommandType
from bollard.store import sriov
from bollard.store.sriov import PfRow, VfRow
from tests.support.cluster import DEADLINE, AgentThread, ServerThread, wait_until

PF = PfConfig(device="ens1f0", vfs=4, physnet="physnet1")


def pfs(server: ServerThread, node: str) -> list[PfRow]:
    with server.runtime.db.read() as conn:
        return sriov.pfs_of(conn, node)


def vfs(server: ServerThread, node: str) -> list[VfRow]:
    with server.runtime.db.read() as conn:
        return sriov.vfs_of(conn, node)


def on_server(server: ServerThread, coro: Any) -> Any:
    loop = server.runtime._loops[0].get_loop()  # the loop the server's sessions run on
    return asyncio.run_coroutine_threadsafe(coro, loop).result(DEADLINE)


def connected(server: ServerThread, node: str) -> bool:
    return bool(server.client.get(f"/nodes/{node}").json()["connected"])


def restart(server: ServerThread, agent: AgentThread, **change: Any) -> AgentThread:
    agent.stop()
    wait_until(lambda: not connected(server, "node1"), "node1 to disconnect")
    again = AgentThread(server, "node1", Path(), config=replace(agent.config, **change))
    wait_until(lambda: connected(server, "node1"), "node1 to connect again")
    return again


def test_pfs_reach_the_store_and_a_restart_reapplies_vf_settings(
    server: ServerThread, tmp_path: Path
) -> None:
    agent = AgentThread(server, "node1", tmp_path, sriov_pfs=(PF,))
    rows = wait_until(lambda: pfs(server, "node1"), "node1's PFs in the store")
    assert [(p.device, p.physnet, p.vfs, p.vfs_total) for p in rows] == [
        ("ens1f0", "physnet1", 4, 64)
    ]
    found = vfs(server, "node1")
    assert [(v.idx, v.netdev, v.used_by) for v in found] == [
        (i, f"ens1f0v{i}", None) for i in range(4)
    ]
    assert len({v.pci for v in found}) == 4 and found[2].applied.vlan == 0

    # A VF change through the server: a command the agent journals and runs once.
    args = {"pf": "ens1f0", "vf": 2, "settings": {"vlan": 100, "trust": True}}
    result = on_server(server, server.runtime.dispatcher.call("node1", CommandType.VF_SET, args))
    vf = SriovVf.model_validate(result["vf"])
    assert (vf.index, vf.pci, vf.settings.vlan, vf.settings.trust) == (2, found[2].pci, 100, True)
    state_file = sim_state_file(agent.config.fabric_dir or Path(), "node1")
    assert asyncio.run(SimSriov(state_file).read("ens1f0", 2)).vlan == 100

    # A cold boot loses the host's VF settings; the agent's next start applies them again.
    # The store learns the change from the next heartbeat (no restart needed)...
    wait_until(lambda: vfs(server, "node1")[2].applied.vlan == 100, "the VLAN in the store")
    agent.stop()
    wait_until(lambda: not connected(server, "node1"), "node1 to disconnect")
    SimSriov.reboot(state_file)
    with pytest.raises(SriovError, match="PF ens1f0 has no VF 2"):  # the VFs are gone
        asyncio.run(SimSriov(state_file).read("ens1f0", 2))
    agent = AgentThread(server, "node1", Path(), config=agent.config)
    wait_until(lambda: connected(server, "node1"), "node1 to connect again (after its set-up)")
    wait_until(
        lambda: vfs(server, "node1")[2].applied.vlan == 100, "the re-applied VLAN in the store"
    )
    assert asyncio.run(SimSriov(state_file).read("ens1f0", 2)).trust is True
    agent.stop()


def test_bad_vf_set_is_refused_naming_the_value(server: ServerThread, tmp_path: Path) -> None:
    agent = AgentThread(server, "node1", tmp_path, sriov_pfs=(PF,))
    wait_until(lambda: pfs(server, "node1"), "node1's PFs in the store")
    for args, named in (
        ({"pf": "ens9f0", "vf": 0, "settings": {"vlan": 1}}, "PF ens9f0 is not in"),
        ({"pf": "ens1f0", "vf": 9, "settings": {"vlan": 1}}, "PF ens1f0 has no VF 9"),
        ({"pf": "ens1f0", "vf": 0, "settings": {"vlan": 5000}}, "vlan 5000"),
    ):
        call = server.runtime.dispatcher.call("node1", CommandType.VF_SET, args)
        try:
            on_server(server, call)
        except CommandFailed as exc:
            assert named in exc.message, exc.message
        else:
            raise AssertionError(f"VF_SET {args} succeeded")
    state_file = sim_state_file(agent.config.fabric_dir or Path(), "node1")
    assert all(asyncio.run(SimSriov(state_file).read("ens1f0", i)).vlan == 0 for i in range(4))
    agent.stop()


def test_a_pf_left_out_of_the_configuration_leaves_the_store(
    server: ServerThread, tmp_path: Path
) -> None:
    other = PfConfig(device="ens2f0", vfs=2, physnet="storage")
    agent = AgentThread(server, "node1", tmp_path, sriov_pfs=(PF, other))
    wait_until(lambda: len(pfs(server, "node1")) == 2, "both PFs in the store")
    agent = restart(server, agent, sriov_pfs=(other,))
    wait_until(
        lambda: [p.device for p in pfs(server, "node1")] == ["ens2f0"], "ens1f0 to be dropped"
    )
    assert {v.pf for v in vfs(server, "node1")} == {"ens2f0"}
    agent.stop()


async def _raw_hello(server: ServerThread, token: str, report: list[SriovPf] | None) -> str:
    """The server's answer to a hello carrying `report` (None: as an agent that does not
    report SR-IOV sends it); the session is closed at once."""
    hello = Hello(
        node="node1", incarnation=new_uuid(), boot_id="boot-1", driver="sim",
        capacity=Capacity(vcpus=2, memory_mb=2048), sriov=report,
    )  # fmt: skip
    url = server.url.replace("http", "ws", 1) + AGENT_PATH
    async with connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        await ws.send(hello.model_dump_json(exclude_none=True))
        async with asyncio.timeout(DEADLINE):
            while True:  # (a welcomed session may get queries right away)
                kind = json.loads(await ws.recv()).get("type")
                if kind in ("welcome", "error"):
                    return str(kind)


def test_older_agents_and_bad_reports_leave_the_records_alone(
    server: ServerThread, tmp_path: Path
) -> None:
    agent = AgentThread(server, "node1", tmp_path, sriov_pfs=(PF,))
    before = wait_until(lambda: vfs(server, "node1"), "node1's VFs in the store")
    agent.stop()
    wait_until(lambda: not connected(server, "node1"), "node1 to disconnect")
    token = agent.config.token_file.read_text().strip()
    assert asyncio.run(_raw_hello(server, token, None)) == "welcome"
    assert vfs(server, "node1") == before  # an agent that does not report SR-IOV
    twice = SriovPf(device="ens1f0", physnet="physnet1")
    assert asyncio.run(_raw_hello(server, token, [twice, twice])) == "welcome"
    assert vfs(server, "node1") == before  # refused by the store, the session still welcomed
    assert asyncio.run(_raw_hello(server, token, [])) == "welcome"
    assert pfs(server, "node1") == [] and vfs(server, "node1") == []
