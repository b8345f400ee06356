"""Creating many VMs at once (issue 24): `POST /vms/batch` and `bollard vm create --count`,
through the real server and real sim agents; and through the API server in front of cells."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from bollard.cli.main import app
from bollard.sim.fabric import Fabric
from bollard.sim.models import FaultMode
from tests.api.test_api_roles import add_user, as_token
from tests.support.cells import Cells, running_cells
from tests.support.cluster import AgentThread, ServerThread
from tests.support.databases import SchemaTemplates

Cluster = tuple[ServerThread, list[AgentThread]]


def _batch(client: httpx.Client, name: str, count: int, **body: Any) -> httpx.Response:
    return client.post(
        "/vms/batch",
        json={"name": name, "count": count, "vcpus": 1, "memory_mb": 256, **body},
    )


def _ended(client: httpx.Client, task_id: str) -> dict[str, Any]:
    for _ in range(20):
        task: dict[str, Any] = client.get(f"/tasks/{task_id}/wait", params={"timeout": 5}).json()
        if task["finished_at"] is not None:
            return task
    raise AssertionError(f"task {task_id} did not end: {task}")


def _error(answer: httpx.Response, status: int, code: str) -> str:
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["code"] == code, error
    message: str = error["message"]
    assert "\n" not in message
    return message


def _nothing_made(server: ServerThread, free_before: dict[str, Any]) -> None:
    assert server.client.get("/vms").json()["total"] == 0
    assert server.client.get("/tasks").json()["total"] == 0
    for node, free in free_before.items():
        assert server.client.get(f"/nodes/{node}").json()["free"] == free, node


def _free(server: ServerThread) -> dict[str, Any]:
    return {n: server.client.get(f"/nodes/{n}").json()["free"] for n in ("node1", "node2")}


def test_a_batch_creates_every_vm_and_its_task_and_they_run(cluster: Cluster) -> None:
    server, _ = cluster
    answer = _batch(server.client, "web", 3, start=True)
    assert answer.status_code == 202, answer.text
    items = answer.json()["items"]
    assert [i["vm"]["name"] for i in items] == ["web-1", "web-2", "web-3"]
    assert all(i["task"]["type"] == "create" and i["task"]["vm"] == i["vm"]["name"] for i in items)
    assert all(i["vm"]["status"] == "BUILD" for i in items)
    for item in items:
        assert _ended(server.client, item["task"]["id"])["state"] == "succeeded"
    vms = {v["name"]: v for v in server.client.get("/vms").json()["items"]}
    assert sorted(vms) == ["web-1", "web-2", "web-3"]
    assert {v["status"] for v in vms.values()} == {"ACTIVE"}
    allocated = [server.client.get(f"/nodes/{n}").json()["allocated"] for n in ("node1", "node2")]
    assert sum(a["memory_mb"] for a in allocated) == 3 * 256


def test_nics_get_a_free_mac_each_and_a_given_mac_is_refused(cluster: Cluster) -> None:
    server, _ = cluster
    nic = {"network": "default"}
    answer = _batch(server.client, "net", 2, nics=[nic])
    assert answer.status_code == 202, answer.text
    macs = [i["vm"]["nics"][0]["mac"] for i in answer.json()["items"]]
    assert len(set(macs)) == 2
    fixed = _batch(server.client, "fix", 2, nics=[{**nic, "mac": "52:54:00:12:34:56"}])
    message = _error(fixed, 422, "invalid-input")
    assert "52:54:00:12:34:56" in message and "cannot be shared" in message
    assert server.client.get("/vms/fix-1").status_code == 404


def test_all_or_nothing_when_not_all_fit(cluster: Cluster) -> None:
    server, _ = cluster
    before = _free(server)
    # node1 (the only node allowed) takes two of 16000 MB: the third fits nowhere.
    answer = _batch(server.client, "big", 3, memory_mb=16000, node_limit=["node1"])
    message = _error(answer, 409, "insufficient-capacity")
    assert message.startswith("only 2 of 3 VMs fit (big-3 does not): ")
    assert message.endswith("nothing was created")
    _nothing_made(server, before)
    # Two do fit, both at once on node1: each placement sees the claims made before it.
    fits = _batch(server.client, "big", 2, memory_mb=16000, node_limit=["node1"])
    assert fits.status_code == 202, fits.text
    assert [i["vm"]["node"] for i in fits.json()["items"]] == ["node1", "node1"]
    assert server.client.get("/nodes/node1").json()["free"]["memory_mb"] == 32768 - 32000


def test_a_taken_name_refuses_the_whole_batch(cluster: Cluster) -> None:
    server, _ = cluster
    taken = server.client.post("/vms", json={"name": "db-2", "vcpus": 1, "memory_mb": 256})
    assert taken.status_code == 202, taken.text
    _ended(server.client, taken.json()["task"]["id"])
    before = _free(server)
    message = _error(_batch(server.client, "db", 3), 409, "already-exists")
    assert message == "a VM named 'db-2' already exists: nothing was created"
    assert [v["name"] for v in server.client.get("/vms").json()["items"]] == ["db-2"]
    assert server.client.get("/tasks").json()["total"] == 1
    assert _free(server) == before


@pytest.mark.parametrize("count", [0, 1, 101, "many", None])
def test_count_out_of_range_is_422(server: ServerThread, count: object) -> None:
    body: dict[str, Any] = {"name": "x", "vcpus": 1, "memory_mb": 256}
    if count is not None:
        body["count"] = count
    answer = server.client.post("/vms/batch", json=body)
    message = _error(answer, 422, "invalid-input")
    assert "count" in message


def test_a_name_too_long_with_its_number_is_422_naming_the_limit(server: ServerThread) -> None:
    name = "n" * 61  # n..n-10 is 64 characters
    message = _error(_batch(server.client, name, 10), 422, "invalid-input")
    assert "at most 63" in message and "64 characters" in message
    assert _batch(server.client, name, 9).status_code == 409  # n..n-9 fits: no node, no room
    bad = _batch(server.client, "-x", 2)  # the name rule of a single create
    assert _error(bad, 422, "invalid-input")


def test_node_pins_every_vm_of_the_batch(cluster: Cluster) -> None:
    server, _ = cluster
    answer = _batch(server.client, "pin", 3, node="node2")
    assert answer.status_code == 202, answer.text
    assert {i["vm"]["node"] for i in answer.json()["items"]} == {"node2"}
    for item in answer.json()["items"]:
        assert _ended(server.client, item["task"]["id"])["state"] == "succeeded"
    # node2 has 16384 MB: a pinned batch that does not fit there is refused whole.
    message = _error(_batch(server.client, "more", 2, node="node2", memory_mb=8000), 409,
                     "insufficient-capacity")  # fmt: skip
    assert message.startswith("only 1 of 2 VMs fit (more-2 does not): ")
    assert server.client.get("/vms/more-1").status_code == 404


def test_a_reader_is_refused_as_for_a_single_create(server: ServerThread) -> None:
    _, reader_token = add_user(server, "rita", "reader")
    _, operator_token = add_user(server, "olga", "operator")
    with as_token(server, reader_token) as reader, as_token(server, operator_token) as operator:
        single = reader.post("/vms", json={"name": "r", "vcpus": 1, "memory_mb": 256})
        batch = _batch(reader, "r", 2)
        assert (single.status_code, batch.status_code) == (403, 403)
        message = _error(batch, 403, "forbidden")
        assert "vm.create" in message and "has role reader" in message
        assert _batch(operator, "o", 2).status_code == 409  # allowed: no node to place on


def _cli(server: ServerThread, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *args: str) -> Any:
    monkeypatch.setenv("BOLLARD_URL", server.url)
    monkeypatch.setenv("BOLLARD_TOKEN", server.token)
    monkeypatch.setenv("BOLLARD_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.delenv("BOLLARD_DEBUG", raising=False)
    return CliRunner().invoke(app, list(args))


def test_cli_count_waits_for_every_task(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    server, _ = cluster
    result = _cli(server, monkeypatch, tmp_path, "vm", "create", "app", "--vcpus", "1",
                  "--memory", "256", "--count", "3", "--start", "--wait", "-o", "json")  # fmt: skip
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert [i["vm"]["name"] for i in out["items"]] == ["app-1", "app-2", "app-3"]
    assert {i["task"]["state"] for i in out["items"]} == {"succeeded"}
    assert {i["vm"]["status"] for i in out["items"]} == {"ACTIVE"}
    assert "waiting for 3 create tasks" in result.stderr
    # Without --wait: a table of the VMs and their tasks.
    table = _cli(server, monkeypatch, tmp_path, "vm", "create", "tab", "--vcpus", "1",
                 "--memory", "256", "--count", "2")  # fmt: skip
    assert table.exit_code == 0, table.output
    assert "tab-1" in table.stdout and "tab-2" in table.stdout
    assert "2 VMs accepted" in table.stdout
    refused = _cli(server, monkeypatch, tmp_path, "vm", "create", "app", "--vcpus", "1",
                   "--memory", "256", "--count", "2")  # fmt: skip
    assert refused.exit_code == 1
    said = refused.stderr.strip()
    assert said == "error: VMs named app-1, app-2 already exist: nothing was created"


def test_cli_count_names_the_vms_that_failed(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    server, agents = cluster
    Fabric(agents[0].config.fabric_dir or "").host("node2").faults.set("define", FaultMode.FAIL, 0)
    result = _cli(server, monkeypatch, tmp_path, "vm", "create", "bad", "--vcpus", "1",
                  "--memory", "256", "--count", "2", "--node", "node2", "--wait")  # fmt: skip
    assert result.exit_code == 1, result.output
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 2 of 2 VMs not created: bad-1 (task ")
    assert "bad-2 (task " in last
    assert "bad-1" in result.stdout and "bad-2" in result.stdout  # the table, before the error


def test_cli_help_explains_count() -> None:
    result = CliRunner().invoke(app, ["vm", "create", "--help"])
    assert result.exit_code == 0
    assert "--count" in result.stdout and "NAME-1" in result.stdout


@pytest.fixture
def cells(schema_templates: SchemaTemplates, tmp_path: Path) -> Iterator[Cells]:
    with running_cells(schema_templates, tmp_path, nodes=1) as deployment:
        yield deployment


def test_cells_send_a_batch_whole_to_one_cell(cells: Cells) -> None:
    answer = _batch(cells.client, "c", 3, cell="cell2")
    assert answer.status_code == 202, answer.text
    items = answer.json()["items"]
    assert [(i["vm"]["name"], i["vm"]["cell"]) for i in items] == [
        ("c-1", "cell2"), ("c-2", "cell2"), ("c-3", "cell2")
    ]  # fmt: skip
    for item in items:
        assert _ended(cells.client, item["task"]["id"])["state"] == "succeeded"
        assert cells.client.get(f"/vms/{item['vm']['name']}").json()["cell"] == "cell2"
    assert cells.cells["cell1"].client.get("/vms/c-1").status_code == 404
    # Without a cell: one cell (as a single create chooses), all of them there.
    spread = _batch(cells.client, "d", 2)
    assert spread.status_code == 202, spread.text
    assert len({i["vm"]["cell"] for i in spread.json()["items"]}) == 1
    # A name taken in any cell refuses the whole batch, and maps nothing.
    taken = _batch(cells.client, "c", 4, cell="cell1")
    assert _error(taken, 409, "already-exists") == "a VM named 'c-1' exists (in cell cell2)"
    assert cells.client.get("/vms/c-4").status_code == 404
    assert cells.cells["cell1"].client.get("/vms").json()["total"] == (
        2 if spread.json()["items"][0]["vm"]["cell"] == "cell1" else 0
    )
    # The cell's own refusal (a given MAC) comes back; nothing stays mapped.
    nics = [{"network": "n", "mac": "52:54:00:00:00:09"}]
    mac = _batch(cells.client, "m", 2, cell="cell1", nics=nics)
    assert _error(mac, 422, "invalid-input")
    assert _batch(cells.client, "m", 2, cell="cell1").status_code == 202
    assert _error(_batch(cells.client, "z", 500), 422, "invalid-input").startswith("count:")
