"""How resizes end besides an operator's confirm or revert: by themselves after
resize.confirm_window (a busy or faulty VM skipped, with an event), and through the state
reconciler when the old copy is gone from the source. Also: an action is named by the
request id its client sent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from bollard.sim.models import FaultMode
from tests.api.test_api_resize import _fabric, create, hosts_of, setup
from tests.api.test_api_vms import Cluster, _wait
from tests.support.cluster import AgentThread, wait_until

# These follow flows and loops, not SQL: SQLite is enough (test_api_resize.py runs the resize
# flows on both databases).
pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def events_of(c: httpx.Client, kind: str) -> list[dict[str, Any]]:
    page = c.get("/events", params={"limit": 1000}).json()
    return [e for e in page["items"] if e["kind"] == kind]


def resized(c: httpx.Client, name: str) -> dict[str, Any]:
    assert _wait(c, c.post(f"/vms/{name}/resize", json={"flavor": "large"}))["state"] == (
        "succeeded"
    )
    vm: dict[str, Any] = c.get(f"/vms/{name}").json()
    assert vm["status"] == "VERIFY_RESIZE"
    return vm


def test_a_resize_left_waiting_past_the_window_is_confirmed_by_itself(cluster: Cluster) -> None:
    c = cluster[0].client
    setup(c)
    assert c.put("/settings/reconcile.state.interval", json={"value": 0.2}).status_code == 200
    vm = create(c, "a1")
    resized(c, "a1")
    assert c.get("/vms/a1").json()["status"] == "VERIFY_RESIZE"  # the window is 0: never
    assert c.put("/settings/resize.confirm_window", json={"value": 1}).status_code == 200
    wait_until(lambda: c.get("/vms/a1").json()["status"] == "ACTIVE", "the auto-confirm")
    assert hosts_of(cluster, vm["uuid"]) == {"node2": "running"}
    [event] = events_of(c, "resize.auto_confirmed")
    assert event["vm"] == "a1" and "confirmed by itself after 1 s" in event["message"]
    assert event["actor"] == "system"
    [record] = c.get("/migrations", params={"vm": "a1"}).json()["items"]
    assert record["status"] == "confirmed"


def test_a_faulty_resize_is_skipped_with_one_event(cluster: Cluster) -> None:
    c = cluster[0].client
    setup(c)
    create(c, "a2")
    # The start at the destination fails: resized, stopped, with a fault.
    _fabric(cluster).host("node2").faults.set("start", FaultMode.FAIL)
    task = _wait(c, c.post("/vms/a2/resize", json={"flavor": "large", "to": "node2"}))
    assert task["state"] == "failed", task
    vm = c.get("/vms/a2").json()
    assert vm["status"] == "VERIFY_RESIZE" and vm["fault"]
    assert c.put("/settings/reconcile.state.interval", json={"value": 0.2}).status_code == 200
    assert c.put("/settings/resize.confirm_window", json={"value": 1}).status_code == 200
    wait_until(lambda: events_of(c, "resize.auto_confirm_skipped"), "the skip event")
    [event] = events_of(c, "resize.auto_confirm_skipped")
    assert "in error" in event["message"]
    assert c.get("/vms/a2").json()["status"] == "VERIFY_RESIZE"
    # An operator reverts it: back on node1, started (it ran before the resize).
    _fabric(cluster).host("node2").faults.clear("start")
    assert _wait(c, c.post("/vms/a2/resize/revert"))["state"] == "succeeded"
    back = c.get("/vms/a2").json()
    assert (back["status"], back["node"], back["vcpus"]) == ("ACTIVE", "node1", 1)


def test_the_reconciler_confirms_a_resize_whose_old_copy_is_gone(cluster: Cluster) -> None:
    c = cluster[0].client
    setup(c)
    assert c.put("/settings/reconcile.state.interval", json={"value": 0.2}).status_code == 200
    vm = create(c, "a3")
    resized(c, "a3")
    assert _fabric(cluster).host("node1").delete_vm(vm["uuid"])  # behind Bollard's back
    wait_until(lambda: c.get("/vms/a3").json()["status"] == "ACTIVE", "the reconciler's confirm")
    fixed = [e for e in events_of(c, "reconcile.fixed") if e["vm"] == "a3"]
    assert fixed and "revert is impossible" in fixed[0]["message"]
    [record] = c.get("/migrations", params={"vm": "a3"}).json()["items"]
    assert (record["status"], record["source_hold"]) == ("confirmed", None)
    assert all(v["state"] != "reserved" for v in c.get("/volumes").json()["items"])


def test_an_action_is_named_by_the_request_id_its_client_sent(cluster: Cluster) -> None:
    c = cluster[0].client
    setup(c)
    create(c, "a4")
    answer = c.post("/vms/a4/stop", headers={"X-Request-Id": "req-from-terraform-42"})
    assert answer.headers["x-request-id"] == "req-from-terraform-42"
    _wait(c, answer)
    actions = c.get("/vms/a4/actions").json()["items"]
    assert (actions[0]["action"], actions[0]["request_id"]) == ("stop", "req-from-terraform-42")
    one = c.get("/vms/a4/actions/req-from-terraform-42").json()
    assert one["actor"] == "admin" and [e["event"] for e in one["events"]] == ["stop"]
    # Without one the server makes one up, and answers it.
    other = c.get("/vms/a4")
    assert other.headers["x-request-id"].startswith("req-")
    assert c.get("/vms/a4/actions/req-nope").status_code == 404


def test_an_ha_vm_resized_onto_a_node_that_dies_goes_back_to_its_source(
    cluster: Cluster,
) -> None:
    server, agents = cluster
    c = server.client
    setup(c)
    c.put("/settings/health.startup_grace", json={"value": 0})
    vm = create(c, "a5")
    resized(c, "a5")
    copy = next(d["volume"] for d in c.get("/vms/a5").json()["disks"])
    agents.pop(1).stop()  # node2's agent dies (no power driver): its fence fails
    wait_until(
        lambda: c.get("/nodes/node2").json()["health"] == "fence_failed", "the fence to fail"
    )
    assert c.post("/nodes/node2/confirm-down").status_code == 200
    wait_until(lambda: c.get("/vms/a5").json()["status"] == "ACTIVE", "a5 back on its source")
    back = c.get("/vms/a5").json()
    assert (back["node"], back["vcpus"], back["flavor"]["name"]) == ("node1", 1, "small")
    assert hosts_of(cluster, vm["uuid"])["node1"] == "running"
    assert [e["kind"] for e in events_of(c, "vm.ha_revert")] == ["vm.ha_revert"]
    [record] = c.get("/migrations", params={"vm": "a5"}).json()["items"]
    assert record["status"] == "reverted"
    # Its copy on the dead node is forgotten; the file waits there for the reconciler.
    assert copy not in {v["name"] for v in c.get("/volumes").json()["items"]}


def test_an_agent_reconnecting_keeps_the_old_copy_a_resize_waits_with(
    cluster: Cluster, tmp_path: Path
) -> None:
    server, agents = cluster
    c = server.client
    setup(c)
    vm = create(c, "a6")
    resized(c, "a6")
    before = c.get("/nodes/node1").json()["agent_incarnation"]
    source = agents.pop(0)
    source.stop()
    agents.insert(0, AgentThread(server, "node1", tmp_path, config=source.config))
    wait_until(
        lambda: (
            c.get("/nodes/node1").json()["agent_incarnation"] not in (None, before)
            and c.get("/nodes/node1").json()["inventory_known"]
        ),
        "node1's new session and its first full report",
    )
    # Its first report listed the stopped old copy: the rejoin check left it alone.
    assert hosts_of(cluster, vm["uuid"]) == {"node1": "stopped", "node2": "running"}
    undefines = [
        x for x in c.get("/commands", params={"vm": "a6"}).json()["items"]
        if x["type"] == "undefine"
    ]  # fmt: skip
    assert undefines == []
    assert _wait(c, c.post("/vms/a6/resize/revert"))["state"] == "succeeded"
    assert hosts_of(cluster, vm["uuid"]) == {"node1": "running"}
