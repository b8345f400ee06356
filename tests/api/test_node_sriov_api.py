"""/api/v1/nodes/{name}/sriov against a real server (SQLite and PostgreSQL): a node's PFs and
VFs with their holders; a VF change refused with one line naming the value (and nothing
recorded, no task) or applied on its sim host by a `vf_set` task and recorded at its end;
the roles; and the same calls through an API server in front of cells."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from bollard.domain.sriov import SriovPf, SriovVf, VfSettings, parse_pf
from bollard.domain.states import TaskStatus
from bollard.store import sriov, tasks
from bollard.store.db import Database
from tests.api.test_api_roles import add_user, as_token
from tests.support.cells import Cells, running_cells
from tests.support.cluster import AgentThread, ServerThread, wait_until
from tests.support.databases import SchemaTemplates

VM = "6f1c1c7e-0000-4000-8000-000000000001"  # a holder no VM record has (name shown null)
MAC = "52:54:00:ab:cd:01"


def pf(device: str, count: int, *, bus: str = "03", physnet: str = "phys1") -> SriovPf:
    return SriovPf(
        device=device, physnet=physnet, pci=f"0000:{bus}:00.0", mtu=9000, vfs_total=8,
        vfs=[
            SriovVf(index=i, pci=f"0000:{bus}:10.{i}", netdev=f"{device}v{i}")
            for i in range(count)
        ],
    )  # fmt: skip


def enrol(server: ServerThread, node: str) -> None:
    assert server.client.post("/nodes", json={"name": node}).status_code == 201


def report(db: Database, node: str, pfs: list[SriovPf]) -> None:
    """What a hello carrying these PFs records (agent_records.py), without an agent."""
    with db.write() as conn:
        sriov.sync_node(conn, node, pfs, now=_now())


def _now() -> datetime:
    return datetime.now(UTC)


def error(answer: httpx.Response, status: int) -> str:
    assert answer.status_code == status, answer.text
    message: str = answer.json()["error"]["message"]
    assert "\n" not in message
    return message


def tasks_of(server: ServerThread, node: str) -> list[dict[str, Any]]:
    items = server.client.get("/tasks", params={"limit": 500}).json()["items"]
    return [t for t in items if t["node"] == node]


def vf_of(server: ServerThread, node: str, device: str, index: int) -> dict[str, Any]:
    shown = server.client.get(f"/nodes/{node}/sriov").json()
    found: dict[str, Any] = next(
        v for p in shown["pfs"] if p["device"] == device for v in p["vfs"] if v["index"] == index
    )
    return found


# --- the listing ---------------------------------------------------------------------------


def test_a_nodes_pfs_and_vfs_are_shown_with_their_holders(server: ServerThread) -> None:
    enrol(server, "n1")
    enrol(server, "n2")
    db = server.runtime.db
    first = pf("ens1f0", 3)
    first.vfs[2] = first.vfs[2].model_copy(
        update={"settings": VfSettings(vlan=7, trust=True), "used_by": VM}
    )
    report(db, "n1", [first, pf("ens2f0", 0, bus="04", physnet="phys2")])
    with db.write() as conn:
        held = sriov.claim(conn, node="n1", physnet="phys1", vm=VM, mac=MAC, now=_now())
        assert held is not None and held.idx == 0
        sriov.set_settings(conn, "n1", "ens1f0", 2, VfSettings(vlan=8))

    shown = server.client.get("/nodes/n1/sriov")
    assert shown.status_code == 200, shown.text
    body = shown.json()
    assert body["node"] == "n1" and body["connected"] is False
    assert [(p["device"], p["physnet"], p["free"], len(p["vfs"])) for p in body["pfs"]] == [
        ("ens1f0", "phys1", 2, 3),
        ("ens2f0", "phys2", 0, 0),
    ]
    assert body["pfs"][0]["pci"] == "0000:03:00.0" and body["pfs"][0]["mtu"] == 9000
    vf0, vf1, vf2 = body["pfs"][0]["vfs"]
    assert (vf0["index"], vf0["pci"], vf0["netdev"]) == (0, "0000:03:10.0", "ens1f0v0")
    assert vf0["used_by"] == {"name": None, "uuid": VM} and vf0["mac"] == MAC
    assert vf0["claim_pending"] is False and vf0["claim_task"] is None
    assert vf1["used_by"] is None and vf1["mac"] is None
    # VF 2: Bollard set vlan 8, the host reports vlan 7 and trust on, and a VM using it.
    assert vf2["settings"]["vlan"] == 8 and vf2["applied"]["vlan"] == 7
    assert vf2["applied"]["trust"] is True and vf2["settings"]["trust"] is None
    assert vf2["differs"] == ["vlan"]
    assert vf2["host_used_by"] == {"name": None, "uuid": VM} and vf2["used_by"] is None

    assert server.client.get("/nodes/n2/sriov").json() == {
        "node": "n2", "connected": False, "pfs": [],
    }  # fmt: skip
    assert "'nobody'" in error(server.client.get("/nodes/nobody/sriov"), 404)


# --- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"vlan": 5000}, "vlan 5000: must be between 0 and 4094"),
        ({"vlan": 10, "qos": 9}, "qos 9: must be between 0 and 7"),
        ({"qos": 3}, "qos 3: needs a vlan"),
        ({"min_tx_rate": -1}, "min-tx-rate -1"),
        ({"min_tx_rate": 100, "max_tx_rate": 10}, "min-tx-rate 100: above max-tx-rate 10"),
        ({"link_state": "up"}, "'up'"),
        ({"mtu": 20}, "mtu 20: must be between 68 and 65535"),
        ({"mac": "not-a-mac"}, "mac"),
        ({"vlan": "ten"}, "vlan"),
        ({"colour": "red"}, "colour"),
        ({}, "nothing to change"),
        ({"vlan": None}, "nothing to change"),
    ],
)
def test_bad_settings_are_refused_and_nothing_changes(
    server: ServerThread, body: dict[str, Any], fragment: str
) -> None:
    enrol(server, "n1")
    report(server.runtime.db, "n1", [pf("ens1f0", 2)])
    before = server.client.get("/nodes/n1/sriov").json()
    message = error(server.client.patch("/nodes/n1/sriov/ens1f0/vfs/1", json=body), 422)
    assert fragment in message, message
    assert server.client.get("/nodes/n1/sriov").json() == before
    assert tasks_of(server, "n1") == []


def test_unknown_nodes_pfs_and_vfs_are_404_and_an_absent_agent_409(server: ServerThread) -> None:
    enrol(server, "n1")
    report(server.runtime.db, "n1", [pf("ens1f0", 2)])
    before = server.client.get("/nodes/n1/sriov").json()
    change = {"vlan": 100}
    patch = server.client.patch
    assert "'nobody'" in error(patch("/nodes/nobody/sriov/ens1f0/vfs/0", json=change), 404)
    assert error(patch("/nodes/n1/sriov/ens9/vfs/0", json=change), 404) == (
        "node n1 has no SR-IOV PF 'ens9' (not in its agent's configuration)"
    )
    assert error(patch("/nodes/n1/sriov/ens1f0/vfs/5", json=change), 404) == (
        "node n1: PF ens1f0 has no VF 5"
    )
    assert "has no SR-IOV PF" in error(patch("/nodes/n1/sriov/a..b:c/vfs/0", json=change), 404)
    assert "vf" in error(patch("/nodes/n1/sriov/ens1f0/vfs/x", json=change), 422)
    refused = patch("/nodes/n1/sriov/ens1f0/vfs/0", json=change)
    assert error(refused, 409) == (
        "node n1 is not connected: its VF settings cannot be applied now"
    )
    assert refused.json()["error"]["code"] == "node-unavailable"
    assert server.client.get("/nodes/n1/sriov").json() == before
    assert tasks_of(server, "n1") == []


def test_readers_read_and_only_admins_change_a_vf(server: ServerThread) -> None:
    enrol(server, "n1")
    report(server.runtime.db, "n1", [pf("ens1f0", 1)])
    for name, role in (("rita", "reader"), ("olga", "operator")):
        _, token = add_user(server, name, role)
        with as_token(server, token) as client:
            assert client.get("/nodes/n1/sriov").status_code == 200
            refused = client.patch("/nodes/n1/sriov/ens1f0/vfs/0", json={"vlan": 3})
            message = error(refused, 403)
            assert "needs permission node.sriov (role admin)" in message, message
            assert f"has role {role}" in message
    assert tasks_of(server, "n1") == []


# --- applied on a sim host -----------------------------------------------------------------


@pytest.fixture
def sriov_node(server: ServerThread, tmp_path: Path) -> Iterator[AgentThread]:
    """n1: a sim agent with PF ens1f0 (4 VFs on phys1), its report recorded."""
    agent = AgentThread(
        server, "n1", tmp_path, vcpus=8, memory_mb=8192,
        sriov_pfs=(parse_pf("ens1f0:4:phys1"),),
    )  # fmt: skip
    wait_until(
        lambda: [len(p["vfs"]) for p in server.client.get("/nodes/n1/sriov").json()["pfs"]] == [4],
        "n1's PF and its 4 VFs to be recorded",
    )
    # The hello reports the SR-IOV, and so does the session's first (full) heartbeat: once
    # that is stored, the agent reports it again only when it changes on the host, so what a
    # test writes into the store stays there until the test's own command changes the host.
    wait_until(
        lambda: server.client.get("/nodes/n1").json()["last_seq"] > 0,
        "n1's first heartbeat to be stored",
    )
    yield agent
    agent.stop()


def _wait(server: ServerThread, task: dict[str, Any]) -> dict[str, Any]:
    done: dict[str, Any] = server.client.get(
        f"/tasks/{task['id']}/wait", params={"timeout": 20}
    ).json()
    assert done["state"] in ("succeeded", "failed", "rolled_back"), done
    return done


def test_a_vf_change_is_applied_on_its_host_and_recorded(
    server: ServerThread, sriov_node: AgentThread
) -> None:
    answer = server.client.patch(
        "/nodes/n1/sriov/ens1f0/vfs/2", json={"vlan": 100, "trust": True, "spoof_check": False}
    )
    assert answer.status_code == 202, answer.text
    task = answer.json()
    assert (task["type"], task["node"], task["params"]["pf"], task["params"]["vf"]) == (
        "vf_set", "n1", "ens1f0", 2,
    )  # fmt: skip
    done = _wait(server, task)
    assert done["state"] == "succeeded", done
    assert done["result"]["summary"] == (
        "node n1: PF ens1f0 VF 2: vlan=100 spoof-check=off trust=on"
    )
    vf = vf_of(server, "n1", "ens1f0", 2)
    wanted = {"vlan": 100, "trust": True, "spoof_check": False}
    assert {k: v for k, v in vf["settings"].items() if v is not None} == wanted
    assert all(vf["applied"][k] == v for k, v in wanted.items()), vf["applied"]
    assert vf["differs"] == []
    # A second change keeps the first's settings (only the fields given change).
    again = server.client.patch(
        "/nodes/n1/sriov/ens1f0/vfs/2", json={"vlan": 0, "max_tx_rate": 500}
    )
    done = _wait(server, again.json())
    assert done["state"] == "succeeded", done
    vf = vf_of(server, "n1", "ens1f0", 2)
    assert (vf["settings"]["vlan"], vf["settings"]["trust"], vf["settings"]["max_tx_rate"]) == (
        0, True, 500,
    )  # fmt: skip
    # The host action was one journaled VF_SET command; the change is in the event log.
    commands = server.client.get("/commands", params={"node": "n1", "limit": 500}).json()
    assert [c["type"] for c in commands["items"]].count("vf_set") == 2
    kinds = [e["kind"] for e in server.client.get("/events", params={"node": "n1"}).json()["items"]]
    assert kinds.count("node.vf_set") == 2
    # The other VFs are untouched.
    assert vf_of(server, "n1", "ens1f0", 1)["settings"]["vlan"] is None
    # A MAC is recorded as the host reports it back (lower case): no difference shown.
    mac = server.client.patch("/nodes/n1/sriov/ens1f0/vfs/3", json={"mac": "52:54:00:AA:BB:0C"})
    assert _wait(server, mac.json())["state"] == "succeeded"
    vf = vf_of(server, "n1", "ens1f0", 3)
    assert vf["settings"]["mac"] == vf["applied"]["mac"] == "52:54:00:aa:bb:0c"
    assert vf["differs"] == []


def test_a_change_the_host_refuses_fails_and_records_nothing(
    server: ServerThread, sriov_node: AgentThread
) -> None:
    # The store knows a VF 7 that the host does not have (as after a report the host no
    # longer agrees with): the agent refuses the command, the task fails naming it.
    db = server.runtime.db
    with db.read() as conn:
        rows = sriov.vfs_of(conn, "n1")
    known = [SriovVf(index=r.idx, pci=r.pci, netdev=r.netdev, settings=r.applied) for r in rows]
    ghost = SriovVf(index=7, pci="0000:7f:1f.7", netdev=None)
    report(db, "n1", [SriovPf(device="ens1f0", physnet="phys1", vfs=[*known, ghost])])
    done = _wait(server, server.client.patch("/nodes/n1/sriov/ens1f0/vfs/7",
                                             json={"vlan": 9}).json())  # fmt: skip
    assert done["state"] in ("failed", "rolled_back"), done
    assert "7" in (done["error"] or ""), done
    assert vf_of(server, "n1", "ens1f0", 7)["settings"]["vlan"] is None
    kinds = [e["kind"] for e in server.client.get("/events", params={"node": "n1"}).json()["items"]]
    assert "node.vf_set_failed" in kinds and "node.vf_set" not in kinds


def test_a_held_vfs_mac_and_a_vf_being_changed_are_409(
    server: ServerThread, sriov_node: AgentThread
) -> None:
    db = server.runtime.db
    with db.write() as conn:
        held = sriov.claim(conn, node="n1", physnet="phys1", vm=VM, mac=MAC, now=_now())
        assert held is not None and held.idx == 0
    message = error(
        server.client.patch("/nodes/n1/sriov/ens1f0/vfs/0", json={"mac": "52:54:00:00:00:09"}),
        409,
    )
    assert message == (
        f"node n1: PF ens1f0 VF 0 is held by VM {VM}: its MAC is the VM NIC's ({MAC}), "
        "not 52:54:00:00:00:09"
    )
    # A change of VF 1 still pending (a task the engine was not handed, so it stays so).
    with db.write() as conn:
        pending = tasks.create(
            conn, id="t-pending", type="vf_set", vm_uuid=None, vm_name=None, node="n1",
            params={"pf": "ens1f0", "vf": 1, "settings": {"vlan": 5}}, now=_now(),
        )  # fmt: skip
    assert pending.state is TaskStatus.PENDING
    message = error(server.client.patch("/nodes/n1/sriov/ens1f0/vfs/1", json={"vlan": 6}), 409)
    assert "is being changed by task t-pending" in message
    assert vf_of(server, "n1", "ens1f0", 1)["settings"]["vlan"] is None
    with db.write() as conn:
        tasks.set_state(conn, "t-pending", TaskStatus.FAILED, _now(), error="test: never run")


# --- through an API server in front of cells ----------------------------------------------


@pytest.fixture
def cells(schema_templates: SchemaTemplates, tmp_path: Path) -> Iterator[Cells]:
    with running_cells(schema_templates, tmp_path, nodes=1) as deployment:
        yield deployment


def test_node_sriov_calls_go_to_the_nodes_cell(cells: Cells) -> None:
    node = "cell2-node1"
    report(cells.cells["cell2"].runtime.db, node, [pf("ens1f0", 2)])
    shown = cells.client.get(f"/nodes/{node}/sriov")
    assert shown.status_code == 200, shown.text
    assert [len(p["vfs"]) for p in shown.json()["pfs"]] == [2]
    assert cells.client.get("/nodes/cell1-node1/sriov").json()["pfs"] == []
    patch = cells.client.patch
    assert "vlan 4095" in error(
        patch(f"/nodes/{node}/sriov/ens1f0/vfs/0", json={"vlan": 4095}), 422
    )
    assert "has no VF 3" in error(patch(f"/nodes/{node}/sriov/ens1f0/vfs/3", json={"vlan": 1}), 404)
    assert "'nobody'" in error(patch("/nodes/nobody/sriov/ens1f0/vfs/0", json={"vlan": 1}), 404)
    # Its agent has no SR-IOV configured: the cell's task reaches it and fails there.
    started = patch(f"/nodes/{node}/sriov/ens1f0/vfs/0", json={"vlan": 1})
    assert started.status_code == 202, started.text
    task_id = started.json()["id"]
    done = cells.client.get(f"/tasks/{task_id}/wait", params={"timeout": 20}).json()
    assert done["state"] in ("failed", "rolled_back") and done["error"], done
    assert (
        cells.client.get(f"/nodes/{node}/sriov").json()["pfs"][0]["vfs"][0]["settings"]["vlan"]
        is None
    )
