"""Pools and volumes through the `bollard` CLI against a real cluster of processes (`bollard
up`: a server and two sim agents): create a pool, create a volume, attach it to a VM, write
into it behind Bollard's back, snapshot it, copy it to another node, detach it, delete it.
Every step's `-o json` is parsed and checked, and the volumes are checked on the sim fabric
(`bollard sim volume ... -o json`), the hosts' ground truth.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import Cli

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

POOL = "e2e-nfs"
VOLUME = "e2e-data"
COPY = "e2e-data-copy"
VM = "e2e-disk"


def on_fabric(cli: Cli) -> list[dict[str, Any]]:
    """Every volume of every sim pool, as the fabric has it."""
    found: list[dict[str, Any]] = cli.json("sim", "volume", "list", "--data-dir",
                                           str(cli.data_dir))  # fmt: skip
    return found


def fabric_file(cli: Cli, file: str) -> list[dict[str, Any]]:
    return [v for v in on_fabric(cli) if v["file"] == file]


def pool_reported(cli: Cli) -> dict[str, Any] | None:
    pool: dict[str, Any] = cli.json("pool", "show", POOL)
    return pool if {h["node"] for h in pool["hosts"]} == {"node1", "node2"} else None


def test_a_volume_from_pool_to_delete_through_the_cli(cluster: Cli) -> None:
    cli = cluster
    data_dir = str(cli.data_dir)

    # Pool.
    pool = cli.json("pool", "create", POOL, "--type", "shared", "--path", "/srv/e2e-nfs",
                    "--description", "the e2e share")  # fmt: skip
    assert (pool["name"], pool["type"], pool["path"], pool["nodes"]) == (
        POOL, "shared", "/srv/e2e-nfs", None,
    )  # fmt: skip
    assert POOL in [p["name"] for p in cli.json("pool", "list")]
    shown = cli.wait_until("both nodes report the pool", lambda: pool_reported(cli))
    assert shown["capacity_mb"] and shown["free_mb"]

    # Volume.
    created = cli.json("volume", "create", VOLUME, "--size", "64M", "--pool", POOL)
    assert created["task"]["state"] == "succeeded", created
    volume = created["volume"]
    assert (volume["name"], volume["pool"], volume["node"], volume["size_mb"]) == (
        VOLUME, POOL, None, 64,
    )  # fmt: skip
    assert volume["state"] == "ready"
    file = volume["file"]
    [rec] = fabric_file(cli, file)
    assert (rec["node"], rec["pool"], rec["type"], rec["size_mb"]) == (None, POOL, "shared", 64)
    listed = cli.json("volume", "list", "--pool", POOL)
    assert [v["name"] for v in listed] == [VOLUME]

    # Attach to a (stopped) VM.
    vm = cli.json("vm", "create", VM, "--vcpus", "1", "--memory", "64", "--wait")
    assert vm["task"]["state"] == "succeeded"
    attached = cli.json("volume", "attach", VOLUME, VM)
    assert attached["task"]["state"] == "succeeded", attached
    assert (attached["volume"]["state"], attached["volume"]["vm"]) == ("attached", VM)
    device = attached["volume"]["device"]
    assert device == "vda"
    assert [d["volume"] for d in cli.json("vm", "show", VM)["disks"]] == [VOLUME]
    assert [v["name"] for v in cli.json("volume", "list", "--vm", VM)] == [VOLUME]

    # The guest writes; a snapshot keeps that content.
    written = cli.json("sim", "volume", "write", POOL, file, "--data", "hello from e2e",
                       "--data-dir", data_dir)  # fmt: skip
    assert written["checksum"] != rec["checksum"]
    snap = cli.json("volume", "snapshot", "create", VOLUME, "snap1")
    assert snap["task"]["state"] == "succeeded", snap
    assert snap["volume"]["snapshots"] == 1
    assert [s["name"] for s in cli.json("volume", "snapshot", "list", VOLUME)] == ["snap1"]
    [rec] = fabric_file(cli, file)
    assert [(s["name"], s["checksum"]) for s in rec["snapshots"]] == [
        ("snap1", written["checksum"])
    ]

    # Copy to node2's local pool: the same content there.
    copied = cli.json("volume", "copy", VOLUME, COPY, "--pool", "local", "--node", "node2")
    assert copied["task"]["state"] == "succeeded", copied
    assert (copied["volume"]["name"], copied["volume"]["node"]) == (COPY, "node2")
    [copy_rec] = fabric_file(cli, copied["volume"]["file"])
    assert (copy_rec["node"], copy_rec["pool"], copy_rec["checksum"]) == (
        "node2", "local", written["checksum"],
    )  # fmt: skip

    # A pool holding volumes is not deleted; the error names them.
    refused = cli.one_line_error("pool", "delete", POOL, "--yes")
    assert VOLUME in refused, refused

    # Detach, then delete: the file goes from the fabric.
    detached = cli.json("volume", "detach", VOLUME)
    assert detached["task"]["state"] == "succeeded", detached
    assert (detached["volume"]["state"], detached["volume"]["vm"]) == ("ready", None)
    assert cli.json("vm", "show", VM)["disks"] == []
    deleted = cli.json("volume", "delete", VOLUME, "--yes")
    assert deleted["task"]["state"] == "succeeded", deleted
    assert deleted["volume"] is None
    assert fabric_file(cli, file) == []
    gone = cli.one_line_error("volume", "show", VOLUME)
    assert VOLUME in gone, gone
    # The copy is a volume of its own, untouched.
    [copy_rec] = fabric_file(cli, copied["volume"]["file"])
    assert copy_rec["checksum"] == written["checksum"]
    assert cli.json("volume", "show", COPY)["state"] == "ready"

    # With its last volume gone, the pool can go too.
    cli.ok("pool", "delete", POOL, "--yes")
    assert POOL not in [p["name"] for p in cli.json("pool", "list")]
