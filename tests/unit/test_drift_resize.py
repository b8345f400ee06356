"""The state reconciler's classification knows resizes: the old copy a resize keeps on its
source is no orphan, a resized VM's power is judged by what its owner should run, a resize
whose old copy vanished (or whose source is fenced) and a resize record nothing drives are
differences of class `resize`."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from bollard.domain.drift import DriftClass, ResizeView, classify
from bollard.domain.states import NodeHealth, PowerState, VmState
from tests.unit.test_drift import NOW, U1, UPDATED, facts, host_vm, node, vm

RESIZED = vm(node="n2", epoch=2, vm_state=VmState.RESIZED)


def resize(status: str = "finished", source: str = "n1", dest: str = "n2") -> ResizeView:
    return ResizeView("m-1", U1, "web", source, dest, status, UPDATED)


def kinds(f: object) -> list[tuple[str, str | None]]:
    return [(d.kind.value, d.node) for d in classify(f)]  # type: ignore[arg-type]


def test_the_old_copy_a_resize_keeps_is_not_an_orphan_and_a_resized_vm_running_is_fine() -> None:
    hosts = {
        "n1": [host_vm(node="n1", power=PowerState.STOPPED, epoch=1)],
        "n2": [host_vm(node="n2", epoch=2)],
    }
    f = replace(facts([RESIZED], hosts), resizes={U1: resize()})
    assert kinds(f) == []
    # Without the resize record the stopped copy on n1 is an orphan, as before.
    assert kinds(facts([RESIZED], hosts)) == [("orphan", "n1")]


def test_a_resized_vm_that_stopped_by_itself_is_a_power_difference() -> None:
    hosts = {
        "n1": [host_vm(node="n1", power=PowerState.STOPPED, epoch=1)],
        "n2": [host_vm(node="n2", power=PowerState.STOPPED, epoch=2)],
    }
    f = replace(facts([RESIZED], hosts), resizes={U1: resize()})
    assert kinds(f) == [("power", "n2")]


def test_an_old_copy_gone_from_its_source_is_a_resize_difference() -> None:
    hosts = {"n2": [host_vm(node="n2", epoch=2)]}
    f = replace(facts([RESIZED], hosts), resizes={U1: resize()})
    [drift] = classify(f)
    assert (drift.kind, drift.node, drift.data["source_gone"]) == (DriftClass.RESIZE, "n1", True)
    assert "no longer possible" in drift.detail


def test_a_fenced_source_counts_as_gone_and_an_unknown_inventory_does_not() -> None:
    hosts = {"n2": [host_vm(node="n2", epoch=2)]}
    fenced = replace(
        facts([RESIZED], hosts, nodes=[node("n1", health=NodeHealth.FENCED), node("n2")]),
        resizes={U1: resize()},
    )
    assert kinds(fenced) == [("resize", "n1")]
    unknown = replace(
        facts([RESIZED], hosts, nodes=[node("n1", inventory_known=False), node("n2")]),
        resizes={U1: resize()},
    )
    assert kinds(unknown) == []


def test_an_open_record_no_task_drives_and_no_resized_vm_waits_on_is_a_difference() -> None:
    active = vm(node="n2", epoch=2)
    hosts = {"n2": [host_vm(node="n2", epoch=2)]}
    f = replace(facts([active], hosts), resizes={U1: resize()})
    [drift] = classify(f)
    assert drift.kind is DriftClass.RESIZE and drift.data.get("open") is True
    # A record changed within the grace period is left for its task to finish.
    recent = replace(f, resizes={U1: replace(resize(), updated_at=NOW - timedelta(seconds=5))})
    assert kinds(recent) == []
    # A task holding the VM explains it.
    held = replace(facts([replace(active, task_id="t", task_state=None)], hosts))
    assert kinds(replace(held, resizes={U1: resize("migrating")})) == [("pending", "n2")]


def test_a_resize_on_its_own_node_has_no_old_copy_to_look_for() -> None:
    own = vm(node="n1", epoch=1, vm_state=VmState.RESIZED)
    f = replace(facts([own], {"n1": [host_vm(node="n1")]}), resizes={U1: resize(dest="n1")})
    assert kinds(f) == []
