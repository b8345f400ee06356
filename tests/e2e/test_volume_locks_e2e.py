"""One writer per disk with real processes: a VM whose disk is a volume of a shared pool runs
on node3 with the volume's lock; node3 is cut off from the server (its VM keeps running and
keeps the lock). The VM is restarted on another node only after node3's fence, taking the lock
over from the fenced host; at no time does it run on two hosts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bollard.sim.fabric import Fabric
from tests.e2e.conftest import Cli, local_cluster
from tests.e2e.test_partition_e2e import CUT, OTHERS, FabricWatch, _running_in_fabric

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def cluster3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    root = tmp_path_factory.mktemp("locks")
    with local_cluster(root, "--nodes", "3", "--sim-latency", "0.05", "--heartbeat", "1") as cli:
        cli.ok("settings", "set", "health.startup_grace", "0")
        yield cli


def _lock(cli: Cli, file: str) -> dict[str, Any] | None:
    path = cli.data_dir / "fabric" / "shared" / "nfs" / ".bollard-locks" / f"{file}.lock"
    try:
        found: dict[str, Any] = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None
    return found


def test_a_vm_on_a_shared_volume_moves_only_after_the_fence_and_takes_the_lock(
    cluster3: Cli,
) -> None:
    cli = cluster3
    data_dir = ["--data-dir", str(cli.data_dir)]
    cli.ok("pool", "create", "nfs", "--type", "shared", "--path", "/srv/nfs")
    cli.ok("volume", "create", "db-data", "--size", "64", "--pool", "nfs", "--wait")
    cli.ok("vm", "create", "db", "--vcpus", "1", "--memory", "256", "--node", CUT, "--wait")
    cli.ok("volume", "attach", "db-data", "db", "--wait")
    cli.ok("vm", "start", "db", "--wait")
    volume = cli.json("volume", "show", "db-data")
    assert volume["state"] == "attached" and volume["lock"]["node"] == CUT, volume
    held = _lock(cli, volume["file"])
    assert held is not None and (held["node"], held["epoch"]) == (CUT, 1), held

    with FabricWatch(Fabric(cli.data_dir / "fabric"), frozenset({"db"})) as watch:
        cli.ok("sim", "partition", CUT, *data_dir)

        def moved() -> bool:
            return _running_in_fabric(cli).get("db") in OTHERS

        cli.wait_until("db runs on node1 or node2", moved, timeout=60)
        seen = watch.reads
        cli.wait_until("the watcher to read the fabric again", lambda: watch.reads >= seen + 3,
                       timeout=10)  # fmt: skip
        assert watch.violations == [], watch.violations
        assert watch.cut_off_at is not None and watch.elsewhere_at is not None
        assert watch.cut_off_at < watch.elsewhere_at  # fenced (powered off) first

    vm = cli.json("vm", "show", "db")
    assert vm["node"] in OTHERS and vm["epoch"] == 2, vm
    held = _lock(cli, volume["file"])
    assert held is not None and (held["node"], held["epoch"]) == (vm["node"], 2), held
    # The start on the new node says it broke the fenced host's lock.
    starts = [
        c for c in cli.json("command", "list", "--vm", "db", "--limit", "100")
        if c["type"] == "start" and c["node"] == vm["node"]
    ]  # fmt: skip
    assert starts, starts
    detail = cli.json("command", "show", starts[0]["id"])
    notes = ((detail.get("answer") or {}).get("result") or {}).get("locks")
    assert notes == [f"lock of {volume['file']} taken over from {CUT}"], detail
    shown = cli.json("volume", "show", "db-data")
    assert shown["lock"]["node"] == vm["node"] and shown["state"] == "attached", shown
