"""Which hosts the state reconciler asks for their pools' files, and which files a volume
task writes (bollard.server.reconcile.storage_drift)."""

from __future__ import annotations

from datetime import UTC, datetime

from bollard.domain.protocol import PoolReport, StorageReport, VolumeFileReport
from bollard.domain.storage import Pool, PoolType
from bollard.domain.storage_drift import HostFile
from bollard.server.reconcile.storage_drift import (
    SHARED_WITNESSES,
    listings_of,
    task_places,
    whom_to_ask,
)

NOW = datetime(2024, 5, 1, tzinfo=UTC)


def pool(name: str, type: PoolType, nodes: tuple[str, ...] | None = None) -> Pool:
    return Pool(name, type, None if type is PoolType.LOCAL else f"/srv/{name}", nodes, None, NOW)


def test_local_pools_are_asked_of_each_of_their_hosts_shared_ones_of_a_few() -> None:
    local = pool("local", PoolType.LOCAL)
    fast = pool("fast", PoolType.LOCAL, nodes=("n2", "n3"))
    nfs = pool("nfs", PoolType.SHARED)
    connected = ["n4", "n3", "n2", "n1"]
    asked = whom_to_ask([local, fast, nfs], connected)
    names = {node: [p.name for p in of] for node, of in asked.items()}
    assert SHARED_WITNESSES == 2
    assert names == {
        "n1": ["local", "nfs"],
        "n2": ["local", "fast", "nfs"],
        "n3": ["local", "fast"],
        "n4": ["local"],
    }


def test_a_pool_of_no_connected_host_is_asked_of_nobody() -> None:
    assert whom_to_ask([pool("fast", PoolType.LOCAL, nodes=("n9",))], ["n1"]) == {}


def test_task_places_are_a_copys_target_and_a_migrations_source() -> None:
    migrate = {
        "volume_id": "v", "target_id": "v", "pool": "nfs", "node": None, "file": "f",
        "from_pool": "local", "from_node": "n1", "from_file": "f",
    }  # fmt: skip
    assert task_places(migrate) == (("nfs", None, "f"), ("local", "n1", "f"))
    assert task_places({"volume_id": "v", "pool": "local", "node": "n2", "file": "g"}) == (
        ("local", "n2", "g"),
    )
    assert task_places({"volume_id": "v", "from_pool": "", "from_file": ""}) == ()
    assert task_places({"vm_uuid": "u"}) == ()


def test_a_hosts_answer_counts_only_for_pools_asked_read_and_listed() -> None:
    files = [VolumeFileReport(file="a", format="qcow2", size_mb=5, allocated_mb=1, partial=True)]
    report = StorageReport(
        query_id="q",
        pools=[
            PoolReport(name="local", ok=True, volumes=files),
            PoolReport(name="nfs", ok=False, error="stale mount"),
            PoolReport(name="fast", ok=True, volumes=None),  # files not listed
            PoolReport(name="other", ok=True, volumes=[]),  # not asked
        ],
    )
    asked = [
        pool("local", PoolType.LOCAL),
        pool("nfs", PoolType.SHARED),
        pool("fast", PoolType.LOCAL),
    ]
    assert listings_of("n1", asked, report) == {("local", "n1"): {"a": HostFile("a", 5, True)}}
