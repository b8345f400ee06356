"""GET /vms/{name}/console: asked of the VM's host through Inspect."""

from __future__ import annotations

from tests.api.test_api_vms import Cluster, _wait


def test_console_of_a_sim_vm_is_not_kept(cluster: Cluster) -> None:
    c = cluster[0].client
    body = {"name": "con", "vcpus": 1, "memory_mb": 128, "node": "node1", "start": True}
    assert _wait(c, c.post("/vms", json=body))["state"] == "succeeded"
    answer = c.get("/vms/con/console", params={"lines": 5})
    assert answer.status_code == 404
    assert "keeps no console log" in answer.json()["error"]["message"]
    assert c.get("/vms/nope/console").status_code == 404
    assert c.get("/vms/con/console", params={"lines": 0}).status_code == 422


def test_console_of_a_vm_whose_node_is_gone_is_unavailable(cluster: Cluster) -> None:
    server, agents = cluster
    c = server.client
    body = {"name": "far", "vcpus": 1, "memory_mb": 128, "node": "node2", "start": False}
    assert _wait(c, c.post("/vms", json=body))["state"] == "succeeded"
    agents[1].stop()
    agents.pop(1)
    answer = c.get("/vms/far/console")
    assert answer.status_code == 409, answer.text
