"""`bollard vm resize|actions`: giving a VM another flavor (resize, then confirm or revert),
and the record of what was done to a VM (its actions, each with its events).

A resize copies the VM, stopped, to a node with room for the new flavor (or the node given),
starts it there at the new size (if it was running) and leaves it in VERIFY_RESIZE: the
source node keeps its copy of the VM, its original disks and its resources, so that a revert
can go back. Confirm drops the source's copy and frees its resources; revert returns the VM to its
source at its old size and drops the new copy.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import typer

from bollard.cli.client import connect
from bollard.cli.output import (
    OUTPUT_OPTION,
    Output,
    console,
    name_check,
    print_fields,
    print_json,
    print_table,
)
from bollard.cli.vm_common import (
    NAME_ARGUMENT,
    TIMEOUT_OPTION,
    VERIFY_RESIZE,
    WAIT_OPTION,
    follow_task,
    id_check,
    vm_path,
)


def _say(text: str) -> None:
    console.print(text, highlight=False, soft_wrap=True, markup=False)


def resize(
    name: str = NAME_ARGUMENT,
    flavor: str | None = typer.Option(
        None,
        "--flavor",
        metavar="FLAVOR",
        help="Resize to this flavor (`bollard flavor list`). The VM then waits in "
        "VERIFY_RESIZE for --confirm or --revert.",
        callback=name_check("flavor"),
    ),
    to: str | None = typer.Option(
        None,
        "--to",
        metavar="NODE",
        help="With --flavor: the node to resize onto (default: the scheduler chooses one "
        "with room for the new flavor).",
        callback=name_check("node"),
    ),
    confirm: bool = typer.Option(
        False,
        "--confirm",
        help="Keep the new size: delete the source node's copy of the VM and its disks, and "
        "free the resources it held there.",
    ),
    revert: bool = typer.Option(
        False,
        "--revert",
        help="Go back: return the VM to its source node at its old flavor (with the disks "
        "it had there) and delete the new copy and its disks.",
    ),
    wait: bool = WAIT_OPTION,
    timeout: float = TIMEOUT_OPTION,
    output: Output = OUTPUT_OPTION,
) -> None:
    """Give a VM another flavor (a new size), in two stages.

    `--flavor F` resizes: a running VM is stopped; its disks are copied to a node with
    room for F (or the node given with --to), the root disk growing to F's root disk if F
    has one (a resize never shrinks a disk); and it is started there at F's size if it was
    running. It then waits in VERIFY_RESIZE: the source node keeps its copy of the VM, its
    original disks and the vCPUs and memory it used (`bollard node show SOURCE` lists them
    as a hold), so nothing is lost yet.

    Check the VM, then end the resize with one of:

    `--confirm` keeps the new size: the source's copy and original disks are deleted and
    its resources freed.

    `--revert` goes back: the VM returns to its source node at its old flavor, with its
    original disks, and the new copy and its disks are deleted (what the guest wrote to its
    disks since the resize is lost).

    A resize left in VERIFY_RESIZE is confirmed by itself after the cluster's setting
    resize.confirm_window, if one is set. `bollard vm show NAME` shows the open resize,
    `bollard migration list --vm NAME` its record."""
    chosen = [opt for opt, given in (("--flavor", flavor), ("--confirm", confirm),
                                     ("--revert", revert)) if given]  # fmt: skip
    if len(chosen) != 1:
        what = " and ".join(chosen) if chosen else "none"
        raise typer.BadParameter(
            f"give exactly one of --flavor FLAVOR (resize), --confirm or --revert (given: {what})"
        )
    if to is not None and flavor is None:
        raise typer.BadParameter(
            "--to goes with --flavor: a confirm or revert has no target (a revert returns the "
            "VM to its source node)"
        )
    path = f"{vm_path(name)}/resize"
    with connect() as client:
        if flavor is not None:
            answer: dict[str, Any] = client.post(path, {"flavor": flavor, "to": to})
        else:
            answer = client.post(f"{path}/{'confirm' if confirm else 'revert'}")
        vm = follow_task(client, answer, wait=wait, timeout=timeout, output=output)
    if output is Output.json or flavor is None:
        return
    if vm is None:  # not waited for
        _say(
            f"When it is done, {name} waits in {VERIFY_RESIZE} on the new node, the source "
            f"keeping its copy: check it, then `bollard vm resize {name} --confirm` (keep the "
            "new size) or `--revert` (go back)."
        )
    elif vm.get("status") == VERIFY_RESIZE:
        source = (vm.get("resize") or {}).get("source") or "the source node"
        _say(
            f"{source} keeps {name}'s old copy and resources until you confirm or revert: "
            f"`bollard vm resize {name} --confirm` (keep the new size) or `--revert` (go back)."
        )


def actions(
    name: str = NAME_ARGUMENT,
    request_id: str | None = typer.Argument(
        None,
        help="Show this action (its request id, from the list) with its events.",
        callback=id_check("request"),
    ),
    output: Output = OUTPUT_OPTION,
) -> None:
    """What was done to a VM, newest first: each action (create, start, migrate, resize,
    confirmResize, revertResize, ...) with who asked, when, and how it ended.

    With a REQUEST_ID (the API request that asked for it), one action with its events: the
    steps it went through, each with its result and details."""
    path = f"{vm_path(name)}/actions"
    with connect() as client:
        if request_id is not None:
            action: dict[str, Any] = client.get(f"{path}/{quote(request_id, safe='')}")
        else:
            answer: dict[str, Any] = client.get(path)
    if request_id is not None:
        _show_action(action, output)
        return
    items: list[dict[str, Any]] = answer.get("items") or []
    if output is Output.json:
        print_json(items)
        return
    if not items:
        _say(f"No action recorded for {name}.")
        return
    print_table(
        None,
        ["REQUEST ID", "ACTION", "ACTOR", "START", "FINISH", "RESULT", "MESSAGE"],
        [
            (
                a.get("request_id"),
                a.get("action"),
                a.get("actor"),
                a.get("start_time"),
                a.get("finish_time"),
                a.get("result"),
                a.get("message"),
            )
            for a in items
        ],
    )


def _show_action(action: dict[str, Any], output: Output) -> None:
    if output is Output.json:
        print_json(action)
        return
    print_fields(
        [
            ("request_id", action.get("request_id")),
            ("action", action.get("action")),
            ("vm", f"{action.get('vm') or '-'} ({action.get('vm_uuid')})"),
            ("actor", action.get("actor")),
            ("task", _task(action.get("task_id"))),
            ("start", action.get("start_time")),
            ("finish", action.get("finish_time")),
            ("result", action.get("result")),
            ("message", action.get("message")),
        ]
    )
    events = action.get("events") or []
    if not events:
        _say("No event recorded.")
        return
    print_table(
        "events",
        ["EVENT", "START", "FINISH", "RESULT", "DETAILS"],
        [
            (
                e.get("event"),
                e.get("start_time"),
                e.get("finish_time"),
                e.get("result"),
                e.get("details"),
            )
            for e in events
        ],
    )


def _task(task_id: Any) -> str | None:
    return f"{task_id} (`bollard task show {task_id}`)" if task_id else None


def register(vm_app: typer.Typer) -> None:
    """Add resize and actions to `bollard vm` (vm_cmd calls it)."""
    vm_app.command("resize")(resize)
    vm_app.command("actions")(actions)
