"""VM network interfaces through the real server and sim agents, on SQLite and PostgreSQL:
stored with the VM (given MACs lower-cased, missing ones assigned), shown, sent to the host
in the DEFINE command, and each MAC unique among VMs until its VM is deleted."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from bollard.domain.models import MAX_NICS
from bollard.store import macs
from tests.api.test_api_vms import Cluster, _wait
from tests.support.cluster import ServerThread

ASSIGNED = re.compile(r"52:54:00(:[0-9a-f]{2}){3}")


def _commands(c: httpx.Client, vm: str, type_: str) -> list[dict[str, Any]]:
    listed = c.get("/commands", params={"vm": vm}).json()["items"]
    return [x for x in listed if x["type"] == type_]


def _vm(name: str, nics: list[dict[str, Any]], **more: Any) -> dict[str, Any]:
    return {"name": name, "vcpus": 1, "memory_mb": 256, "nics": nics} | more


def _nothing_created(c: httpx.Client, name: str, vms: int = 0, tasks: int = 0) -> None:
    assert c.get(f"/vms/{name}").status_code == 404
    assert c.get("/vms").json()["total"] == vms
    assert c.get("/tasks").json()["total"] == tasks


def test_nics_are_stored_shown_and_defined_with_their_macs(cluster: Cluster) -> None:
    c = cluster[0].client
    nics = [
        {"bridge": "br0", "model": "e1000", "mac": "52:54:00:AB:cd:0F"},
        {"network": "default"},
    ]
    answer = c.post("/vms", json=_vm("n1", nics, start=True))
    first, second = answer.json()["vm"]["nics"]
    plain = {"sriov": None, "mode": None}  # not on an SR-IOV VF
    assert first == {
        "mac": "52:54:00:ab:cd:0f", "network": None, "bridge": "br0", "model": "e1000", **plain
    }  # fmt: skip
    assert ASSIGNED.fullmatch(second["mac"]) and second["mac"] != first["mac"]
    assert second | {"mac": ""} == {
        "mac": "",
        "network": "default",
        "bridge": None,
        "model": "virtio",
        **plain,
    }
    task = _wait(c, answer)
    assert task["state"] == "succeeded", task
    args = [
        {"mac": "52:54:00:ab:cd:0f", "bridge": "br0", "model": "e1000"},
        {"mac": second["mac"], "network": "default", "model": "virtio"},
    ]
    assert task["params"]["nics"] == args
    shown = c.get("/vms/n1").json()["nics"]
    assert shown == [first, second]
    assert c.get("/vms").json()["items"][0]["nics"] == shown
    [define] = _commands(c, "n1", "define")
    assert define["args"]["nics"] == args


def test_a_vm_without_nics_has_none(cluster: Cluster) -> None:
    c = cluster[0].client
    assert _wait(c, c.post("/vms", json=_vm("n0", [])))["state"] == "succeeded"
    assert c.get("/vms/n0").json()["nics"] == []
    [define] = _commands(c, "n0", "define")
    assert define["args"]["nics"] == []


def test_a_taken_mac_is_refused_until_its_vm_is_deleted(cluster: Cluster) -> None:
    c = cluster[0].client
    mac = "52:54:00:00:00:01"
    assert (
        _wait(c, c.post("/vms", json=_vm("a", [{"bridge": "br0", "mac": mac}])))["state"]
        == "succeeded"
    )
    allocated = c.get("/nodes/node1").json()["allocated"]
    for nics in (
        [{"network": "default", "mac": mac.upper()}],
        [{"network": "default"}, {"bridge": "br1", "mac": mac}],
    ):
        again = c.post("/vms", json=_vm("b", nics))
        assert again.status_code == 409, again.text
        error = again.json()["error"]
        assert error["code"] == "already-exists"
        assert mac in error["message"] and "'a'" in error["message"], error
        _nothing_created(c, "b", vms=1, tasks=1)
        assert c.get("/nodes/node1").json()["allocated"] == allocated

    assert _wait(c, c.delete("/vms/a"))["state"] == "succeeded"
    assert c.get("/vms/a").status_code == 404
    taken = _wait(c, c.post("/vms", json=_vm("b", [{"network": "default", "mac": mac}])))
    assert taken["state"] == "succeeded", taken
    assert [n["mac"] for n in c.get("/vms/b").json()["nics"]] == [mac]


def test_bad_nics_are_refused_and_create_nothing(server: ServerThread) -> None:
    c = server.client
    for nics, says in [
        ([{"network": "default", "bridge": "br0"}], "exactly one"),
        ([{"model": "virtio"}], "exactly one"),
        ([{"bridge": "br0", "mac": "52:54:00:12:34"}], "nics[0].mac"),
        ([{"bridge": "br0", "mac": "52-54-00-12-34-56"}], "is not a MAC address"),
        ([{"bridge": "br0", "mac": "52:54:00:12:34:zz"}], "is not a MAC address"),
        ([{"bridge": "br0"}, {"bridge": "br0", "mac": "01:00:5e:00:00:01"}], "multicast"),
        ([{"bridge": "br0", "mac": "ff:ff:ff:ff:ff:ff"}], "multicast"),
        ([{"bridge": "br0"}] * (MAX_NICS + 1), f"at most {MAX_NICS}"),
        ([{"bridge": "br0", "model": "ne2k"}], "nics[0].model"),
        ([{"bridge": "br 0"}], "nics[0].bridge"),
        ([{"network": ""}], "nics[0].network"),
        ([{"network": "n" * 64}], "nics[0].network"),
        (
            [
                {"bridge": "br0", "mac": "52:54:00:00:00:0a"},
                {"bridge": "br1", "mac": "52:54:00:00:00:0A"},
            ],
            "more than one NIC",
        ),
    ]:
        answer = c.post("/vms", json=_vm("bad", nics))
        assert answer.status_code == 422, (nics, answer.text)
        assert says in answer.json()["error"]["message"], answer.text
    _nothing_created(c, "bad")


@pytest.fixture
def repeating_random(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bytes]]:
    """The random source of assigned MACs gives these bytes in order (then fails)."""
    picks = [b"\x01\x02\x03", b"\x01\x02\x03", b"\x0a\x0b\x0c"]
    given: list[bytes] = []

    def token_bytes(n: int) -> bytes:
        assert n == 3
        given.append(picks.pop(0))
        return given[-1]

    monkeypatch.setattr(macs, "token_bytes", token_bytes)
    yield given


def test_assigned_macs_never_collide(cluster: Cluster, repeating_random: list[bytes]) -> None:
    c = cluster[0].client
    answer = c.post("/vms", json=_vm("r1", [{"bridge": "br0"}, {"network": "default"}]))
    assert _wait(c, answer)["state"] == "succeeded"
    assert len(repeating_random) == 3  # the second NIC drew the first one's MAC, then another
    shown = [n["mac"] for n in c.get("/vms/r1").json()["nics"]]
    assert shown == ["52:54:00:01:02:03", "52:54:00:0a:0b:0c"]
