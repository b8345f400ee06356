"""Storage drift classification: volume records against the files the hosts' pools hold
(bollard.domain.storage_drift)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from bollard.domain.drift import Drift, DriftClass
from bollard.domain.states import TaskStatus
from bollard.domain.storage import Pool, PoolType, Volume, VolumeState
from bollard.domain.storage_drift import (
    FIX,
    PARTIAL,
    REPORT,
    HostFile,
    StorageFacts,
    VolumeTask,
    auto_fix,
    bollard_file,
    classify_storage,
)

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
V1 = "11111111-1111-4111-8111-111111111111"
V2 = "22222222-2222-4222-8222-222222222222"
VM1 = "33333333-3333-4333-8333-333333333333"
F1 = f"vol-{V1}.qcow2"
F2 = f"vol-{V2}.qcow2"
LOCAL = Pool("local", PoolType.LOCAL, None, None, None, NOW)
SHARED = Pool("nfs", PoolType.SHARED, "/srv/nfs", None, None, NOW)
T1 = "task-1"

ENDED = [s for s in TaskStatus if s.ended]
UNFINISHED = [s for s in TaskStatus if not s.ended]
TRANSITIONAL = [s for s in VolumeState if s.transitional]
AT_REST = [s for s in VolumeState if s.at_rest]


def volume(
    id: str = V1,
    *,
    name: str = "data",
    pool: str = "local",
    node: str | None = "n1",
    file: str | None = None,
    size_mb: int = 1024,
    state: VolumeState = VolumeState.READY,
    task_id: str | None = None,
    vm_uuid: str | None = None,
    vm_name: str | None = None,
) -> Volume:
    return Volume(
        id=id,
        name=name,
        pool=pool,
        node=node,
        file=file or f"vol-{id}.qcow2",
        format="qcow2",
        size_mb=size_mb,
        state=state,
        vm_uuid=vm_uuid,
        device="vdb" if vm_uuid else None,
        task_id=task_id,
        delete_with_vm=False,
        fault=None,
        created_at=NOW - timedelta(hours=1),
        updated_at=NOW - timedelta(minutes=5),
        vm_name=vm_name,
    )


def task(
    id: str = T1,
    *,
    state: TaskStatus = TaskStatus.RUNNING,
    type: str = "volume_migrate",
    places: Sequence[tuple[str, str | None, str]] = (),
) -> VolumeTask:
    return VolumeTask(id, type, state, tuple(places))


def listed(*files: str | HostFile, size_mb: int = 1024) -> dict[str, HostFile]:
    out = {}
    for f in files:
        entry = f if isinstance(f, HostFile) else HostFile(f, size_mb)
        out[entry.file] = entry
    return out


def facts(
    volumes: Sequence[Volume] = (),
    listings: Mapping[tuple[str, str], Mapping[str, HostFile]] | None = None,
    *,
    before: Sequence[Volume] | None = None,
    tasks: Sequence[VolumeTask] = (),
    busy_vms: Sequence[str] = (),
    pools: Sequence[Pool] = (LOCAL, SHARED),
) -> StorageFacts:
    """Facts whose first read equals the second unless `before` is given."""
    first = volumes if before is None else before
    return StorageFacts(
        pools={p.name: p for p in pools},
        volumes=list(volumes),
        before={v.id: v for v in first},
        listings=dict(listings or {}),
        tasks={t.id: t for t in tasks},
        busy_vms=frozenset(busy_vms),
    )


def only(found: list[Drift], kind: DriftClass) -> Drift:
    matching = [d for d in found if d.kind is kind]
    assert len(matching) == 1, found
    return matching[0]


# the consistent case


def test_nothing_no_drift() -> None:
    assert classify_storage(facts()) == []


@pytest.mark.parametrize("state", [VolumeState.READY, VolumeState.ATTACHED, VolumeState.ERROR])
def test_a_volume_whose_file_its_host_lists_is_consistent(state: VolumeState) -> None:
    v = volume(state=state, vm_uuid=VM1 if state is VolumeState.ATTACHED else None)
    assert classify_storage(facts([v], {("local", "n1"): listed(F1)})) == []


def test_a_shared_volume_listed_by_every_host_is_consistent() -> None:
    v = volume(pool="nfs", node=None)
    listings = {("nfs", "n1"): listed(F1), ("nfs", "n2"): listed(F1)}
    assert classify_storage(facts([v], listings)) == []


# volume-missing


def test_a_file_its_node_does_not_list_is_missing() -> None:
    v = volume(vm_uuid=VM1, vm_name="web", state=VolumeState.ATTACHED)
    d = only(classify_storage(facts([v], {("local", "n1"): listed()})), DriftClass.VOLUME_MISSING)
    assert (d.node, d.volume, d.pool, d.file) == ("n1", "data", "local", F1)
    assert (d.vm_uuid, d.vm_name) == (VM1, "web")
    assert (d.record, d.host, d.detail) == ("attached, 1024 MiB", f"file {F1} absent", "")
    assert d.data == {"volume_id": V1, "hosts": ["n1"], "elsewhere": []}
    assert d.to_dict()["volume"] == "data" and d.to_dict()["pool"] == "local"


def test_a_missing_file_names_where_a_file_of_its_name_is() -> None:
    listings = {("local", "n1"): listed(), ("local", "n2"): listed(F1), ("nfs", "n1"): listed(F1)}
    d = only(classify_storage(facts([volume()], listings)), DriftClass.VOLUME_MISSING)
    assert d.data["elsewhere"] == ["pool local on n2", "pool nfs"]
    assert d.detail == "a file of that name is in pool local on n2, pool nfs"


def test_no_claim_without_the_answer_of_the_host_that_must_have_it() -> None:
    # n2 answered (and lists nothing), n1 (the volume's node) did not.
    assert classify_storage(facts([volume()], {("local", "n2"): listed()})) == []


def test_a_shared_volume_is_missing_only_when_no_answering_host_lists_it() -> None:
    v = volume(pool="nfs", node=None)
    one_has_it = {("nfs", "n1"): listed(), ("nfs", "n2"): listed(F1)}
    assert classify_storage(facts([v], one_has_it)) == []
    none_has_it = {("nfs", "n1"): listed(), ("nfs", "n2"): listed()}
    d = only(classify_storage(facts([v], none_has_it)), DriftClass.VOLUME_MISSING)
    assert d.node is None and d.data["hosts"] == ["n1", "n2"]
    assert classify_storage(facts([v], {("local", "n1"): listed()})) == []  # nobody answered


def test_a_volume_in_error_is_not_missing() -> None:
    v = volume(state=VolumeState.ERROR)
    assert classify_storage(facts([v], {("local", "n1"): listed()})) == []


@pytest.mark.parametrize("state", UNFINISHED)
def test_a_volume_a_running_task_holds_is_the_tasks_business(state: TaskStatus) -> None:
    v = volume(state=VolumeState.COPYING, task_id=T1)
    found = classify_storage(facts([v], {("local", "n1"): listed()}, tasks=[task(state=state)]))
    assert found == []


def test_a_volume_of_a_vm_a_task_holds_is_not_judged() -> None:
    v = volume(state=VolumeState.ATTACHED, vm_uuid=VM1)
    listings = {("local", "n1"): listed(), ("local", "n2"): listed(F1)}
    assert classify_storage(facts([v], listings, busy_vms=[VM1])) == []


@pytest.mark.parametrize(
    "first",
    [
        [],  # created between the reads
        [volume(node="n2")],  # moved between the reads
        [volume(state=VolumeState.MIGRATING, task_id=T1)],  # a task ended between the reads
    ],
)
def test_a_volume_that_changed_between_the_reads_is_not_judged(first: list[Volume]) -> None:
    found = classify_storage(facts([volume()], {("local", "n1"): listed()}, before=first))
    assert [d for d in found if d.kind is not DriftClass.VOLUME_ORPHAN] == []


# volume-size


def test_the_hosts_size_differing_from_the_records_is_a_size_difference() -> None:
    listings = {("local", "n1"): listed(F1, size_mb=2048)}
    d = only(classify_storage(facts([volume()], listings)), DriftClass.VOLUME_SIZE)
    assert (d.record, d.host) == ("1024 MiB", "2048 MiB on n1")
    assert d.data == {"volume_id": V1, "record_mb": 1024, "size_mb": 2048, "host": "n1"}


def test_a_volume_in_error_still_has_its_size_checked() -> None:
    v = volume(state=VolumeState.ERROR)
    listings = {("local", "n1"): listed(F1, size_mb=10)}
    assert (
        only(classify_storage(facts([v], listings)), DriftClass.VOLUME_SIZE).data["size_mb"] == 10
    )


def test_a_partial_file_has_no_size_to_compare() -> None:
    listings = {("local", "n1"): listed(HostFile(F1, 10, partial=True))}
    assert classify_storage(facts([volume()], listings)) == []


def test_a_held_volume_has_no_size_difference() -> None:
    v = volume(state=VolumeState.RESIZING, task_id=T1)
    listings = {("local", "n1"): listed(F1, size_mb=4096)}
    assert classify_storage(facts([v], listings, tasks=[task(type="volume_grow")])) == []


# volume-stuck


@pytest.mark.parametrize("state", TRANSITIONAL)
def test_a_transitional_volume_without_a_task_is_stuck(state: VolumeState) -> None:
    d = only(classify_storage(facts([volume(state=state)])), DriftClass.VOLUME_STUCK)
    assert (d.record, d.host) == (
        f"{state}, held by no task",
        "a transitional state needs its task",
    )
    assert d.data == {"volume_id": V1, "state": state.value, "task_id": None, "task_state": None}


@pytest.mark.parametrize("ended", ENDED)
@pytest.mark.parametrize("state", [VolumeState.COPYING, VolumeState.CREATING, VolumeState.READY])
def test_a_volume_held_by_an_ended_task_is_stuck(ended: TaskStatus, state: VolumeState) -> None:
    v = volume(state=state, task_id=T1)
    found = classify_storage(facts([v], {("local", "n1"): listed()}, tasks=[task(state=ended)]))
    d = only(found, DriftClass.VOLUME_STUCK)  # not missing as well: stuck comes first
    assert (d.record, d.host) == (f"{state} (task {T1})", f"task ended {ended}")
    assert d.data["task_state"] == ended.value


def test_a_volume_held_by_a_task_that_does_not_exist_is_stuck() -> None:
    d = only(
        classify_storage(facts([volume(state=VolumeState.DELETING, task_id=T1)])),
        DriftClass.VOLUME_STUCK,
    )
    assert d.host == "task does not exist" and d.data["task_state"] is None


@pytest.mark.parametrize("state", AT_REST)
def test_a_volume_at_rest_without_a_task_is_not_stuck(state: VolumeState) -> None:
    assert classify_storage(facts([volume(state=state)])) == []


def test_a_stuck_volume_that_changed_between_the_reads_is_not_judged() -> None:
    v = volume(state=VolumeState.COPYING, task_id=T1)
    ended = [task(state=TaskStatus.SUCCEEDED)]
    assert (
        classify_storage(
            facts([v], before=[replace(v, state=VolumeState.READY, task_id=None)], tasks=ended)
        )
        == []
    )


# volume-orphan


def test_a_file_no_record_owns_is_an_orphan() -> None:
    d = only(
        classify_storage(facts([], {("local", "n2"): listed(F2, size_mb=64)})),
        DriftClass.VOLUME_ORPHAN,
    )
    assert (d.node, d.pool, d.file, d.volume, d.vm_uuid) == ("n2", "local", F2, None, "")
    assert (d.record, d.host, d.detail) == ("no volume record", "64 MiB", "unknown to Bollard")
    assert d.data == {
        "host": "n2", "size_mb": 64, "partial": False, "bollard_name": True,
        "copy_of": None, "copy_of_id": None,
    }  # fmt: skip
    assert d.label == F2


def test_a_file_not_named_as_bollard_names_them_says_so() -> None:
    d = only(
        classify_storage(facts([], {("local", "n1"): listed("notes.qcow2")})),
        DriftClass.VOLUME_ORPHAN,
    )
    assert d.data["bollard_name"] is False
    assert d.detail.endswith("not named as Bollard names volume files: a fix leaves it alone")


def test_a_copy_of_a_volume_on_another_node_is_an_orphan_naming_it() -> None:
    listings = {("local", "n1"): listed(F1), ("local", "n2"): listed(F1)}
    d = only(classify_storage(facts([volume()], listings)), DriftClass.VOLUME_ORPHAN)
    assert (d.node, d.data["copy_of"], d.data["copy_of_id"]) == ("n2", "data", V1)
    assert d.detail == "a copy of volume data (in pool local on n1)"


def test_a_file_of_a_shared_pool_is_reported_once() -> None:
    listings = {("nfs", "n1"): listed(F2), ("nfs", "n2"): listed(F2)}
    d = only(classify_storage(facts([], listings)), DriftClass.VOLUME_ORPHAN)
    assert (d.node, d.pool, d.data["host"]) == (None, "nfs", "n1")


def test_a_file_of_a_volume_in_a_shared_pool_is_owned_whatever_host_lists_it() -> None:
    v = volume(pool="nfs", node=None)
    assert classify_storage(facts([v], {("nfs", "n2"): listed(F1)})) == []


def test_the_file_a_running_task_writes_is_not_an_orphan() -> None:
    listings = {("local", "n2"): listed(HostFile(F1, 1024, partial=True))}
    moving = volume(state=VolumeState.MIGRATING, task_id=T1)
    running = task(places=[("local", "n2", F1), ("local", "n1", F1)])
    assert (
        classify_storage(facts([moving], listings | {("local", "n1"): listed(F1)}, tasks=[running]))
        == []
    )
    # The same places written by a task that names no node (a shared pool's target).
    stray = {("nfs", "n1"): listed(F2)}
    assert classify_storage(facts([], stray, tasks=[task(places=[("nfs", None, F2)])])) == []


@pytest.mark.parametrize("ended", ENDED)
def test_a_partial_file_no_running_task_writes_is_an_orphan(ended: TaskStatus) -> None:
    listings = {("local", "n2"): listed(HostFile(F2, 1024, partial=True))}
    found = classify_storage(
        facts([], listings, tasks=[task(state=ended, places=[("local", "n2", F2)])])
    )
    d = only(found, DriftClass.VOLUME_ORPHAN)
    assert d.data["partial"] is True and d.host == "1024 MiB, partial"
    assert d.detail == "the unfinished target of a copy no running task drives"


def test_a_file_of_a_volume_a_task_holds_is_not_an_orphan_anywhere() -> None:
    held = volume(state=VolumeState.MIGRATING, task_id=T1)
    listings = {("local", "n2"): listed(F1)}
    assert classify_storage(facts([held], listings, tasks=[task(places=())])) == []


def test_a_file_of_a_volume_whose_vm_a_task_holds_is_not_an_orphan() -> None:
    # A VM migration carries its local volumes before its record follows.
    v = volume(state=VolumeState.ATTACHED, vm_uuid=VM1)
    listings = {("local", "n1"): listed(F1), ("local", "n2"): listed(F1)}
    assert classify_storage(facts([v], listings, busy_vms=[VM1])) == []


def test_a_file_of_a_volume_created_or_deleted_between_the_reads_is_not_an_orphan() -> None:
    listings = {("local", "n1"): listed(F1)}
    assert classify_storage(facts([volume()], listings, before=[])) == []
    assert classify_storage(facts([], listings, before=[volume()])) == []


def test_a_file_in_a_pool_the_database_does_not_have_is_not_judged() -> None:
    assert classify_storage(facts([], {("gone", "n1"): listed(F1)})) == []


# policies and names


@pytest.mark.parametrize(
    ("policy", "partial", "fixed"),
    [
        (REPORT, True, False),
        (REPORT, False, False),
        (PARTIAL, True, True),
        (PARTIAL, False, False),
        (FIX, True, True),
        (FIX, False, True),
    ],
)
def test_auto_fix_of_orphans_by_policy(policy: str, partial: bool, fixed: bool) -> None:
    d = Drift(DriftClass.VOLUME_ORPHAN, "n1", "", "", "r", "h", data={"partial": partial})
    assert auto_fix(d, policy) is fixed


def test_partial_is_a_policy_of_orphans_only() -> None:
    for kind in (DriftClass.VOLUME_SIZE, DriftClass.STALE):
        d = Drift(kind, "n1", "", "", "r", "h", data={"partial": True})
        assert auto_fix(d, PARTIAL) is False
        assert auto_fix(d, FIX) is True
        assert auto_fix(d, REPORT) is False


@pytest.mark.parametrize(
    ("name", "ours"),
    [
        (F1, True),
        (f"vol-{V1}.raw", True),
        (f"{VM1}-vda.qcow2", True),
        (f"{VM1}-vdp.qcow2", True),
        (f"{VM1}-vdq.qcow2", False),
        (f"{VM1}-vda.raw", False),
        (f"vol-{V1}.vmdk", False),
        ("vol-1.qcow2", False),
        ("notes.qcow2", False),
        (f"x{F1}", False),
    ],
)
def test_bollard_file_names(name: str, ours: bool) -> None:
    assert bollard_file(name) is ours


def test_storage_differences_are_told_apart_by_their_file() -> None:
    a = Drift(
        DriftClass.VOLUME_STUCK, "n1", "", "", "copying, held by no task", "x", pool="p", file=F1
    )
    b = replace(a, file=F2)
    assert a.key != b.key
    vm_drift = Drift(DriftClass.STALE, "n1", VM1, "web", "r", "h")
    assert vm_drift.key == ("stale", VM1, "n1", "r", "h") and "volume" not in vm_drift.to_dict()
