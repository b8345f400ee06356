"""What the `bollard pool` and `bollard volume` commands share: the checks of pool, volume and
snapshot names (made before any request, as usage errors), sizes, the paths of the API, the
arguments and options they repeat (a volume's name, `--pool`, `--node`; of changes: wait by
default, `--no-wait`, `--timeout`, `--yes`), asking for a change and following the task it
started, and sizes for people.

Imports no storage command module, so pool_cmd, volume_cmd and volume_snapshot_cmd all import
it and none imports another back (volume_cmd registers volume_snapshot_cmd's group).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import typer

from bollard.cli.client import ApiError, Client, connect
from bollard.cli.output import (
    NAME_HINT,
    NAME_RULE,
    BadName,
    Output,
    console,
    err_console,
    fail,
    name_check,
    print_json,
)
from bollard.cli.vm_cmd import parse_disk_size
from bollard.cli.vm_common import format_size_mb
from bollard.cli.wait import DEFAULT_WAIT_TIMEOUT, describe, wait_for_task
from bollard.domain.storage import DEVICES, POOL_NAME, SNAPSHOT_NAME

# The API's rules (bollard.domain.storage): pools are lower case; volumes follow the rule of
# VM names (output.NAME_RULE); snapshots may also start with '_'.
POOL_RULE = re.compile(POOL_NAME)
POOL_HINT = (
    "pool names are 1 to 63 lower-case letters, digits, '_' or '-', starting with a letter or digit"
)
SNAPSHOT_RULE = re.compile(SNAPSHOT_NAME)
SNAPSHOT_HINT = (
    "snapshot names are 1 to 63 letters, digits, '.', '_' or '-', not starting with '.' or '-'"
)

SIZE_HELP = (
    "a number of MiB (10240), or one with a unit: M/MiB, G/GiB, T/TiB in any case "
    "(512M, 10G, 1T); 1 MiB to 64 TiB"
)
# Copies and migrations move whole volumes: their waits get longer by default.
LONG_WAIT_TIMEOUT = 3600.0


def pool_check(value: str | None) -> str | None:
    """A typer callback refusing a pool name outside the API's rule (usage error, exit 2)."""
    if value is None or POOL_RULE.fullmatch(value):
        return value
    raise BadName(f"{value!r} is not a valid pool name: {POOL_HINT}")


def snapshot_check(value: str | None) -> str | None:
    """A typer callback refusing a snapshot name outside the API's rule."""
    if value is None or SNAPSHOT_RULE.fullmatch(value):
        return value
    raise BadName(f"{value!r} is not a valid snapshot name: {SNAPSHOT_HINT}")


def names_check(kind: str) -> Callable[[list[str] | None], list[str] | None]:
    """``name_check`` for a repeatable option (e.g. ``--node N --node M``)."""
    check = name_check(kind)

    def check_all(values: list[str] | None) -> list[str] | None:
        for value in values or []:
            check(value)
        return values

    return check_all


def device_check(value: str | None) -> str | None:
    """A typer callback: a VM's disk device, vda to vdp."""
    if value is None or value in DEVICES:
        return value
    raise typer.BadParameter(f"{value!r} is not a disk device: use {DEVICES[0]} to {DEVICES[-1]}")


def parse_size(value: str) -> int:
    """A volume size in MiB, as for `vm create --disk` (``10G``, ``512M``, ``1T``, ``10240``)."""
    return parse_disk_size(value)


class SnapshotRef(dict[str, str]):
    """A snapshot as `--from-snapshot` names it: ``{"volume", "snapshot"}`` (the body of a
    create from a snapshot)."""


def parse_snapshot_ref(value: str) -> SnapshotRef:
    """``VOLUME@SNAPSHOT`` (e.g. ``db1@before-upgrade``); a bad one is a usage error."""
    volume, sep, snapshot = value.strip().partition("@")
    if not sep:
        raise typer.BadParameter(f"{value!r} is not VOLUME@SNAPSHOT (e.g. db1@before-upgrade)")
    if not NAME_RULE.fullmatch(volume):
        raise typer.BadParameter(f"{value!r}: {volume!r} is not a valid volume name: {NAME_HINT}")
    if not SNAPSHOT_RULE.fullmatch(snapshot):
        raise typer.BadParameter(f"{value!r}: {snapshot!r} is not a valid snapshot name")
    return SnapshotRef(volume=volume, snapshot=snapshot)


def pool_path(name: str) -> str:
    return f"/pools/{quote(name, safe='')}"


def volume_path(name: str) -> str:
    return f"/volumes/{quote(name, safe='')}"


def snapshot_path(volume: str, snapshot: str | None = None) -> str:
    base = f"{volume_path(volume)}/snapshots"
    return base if snapshot is None else f"{base}/{quote(snapshot, safe='')}"


# -- arguments and options ----------------------------------------------------------------
VOLUME_ARGUMENT = typer.Argument(..., help="Volume name.", callback=name_check("volume"))


def pool_option(help_text: str, *, required: bool = True) -> Any:
    """``--pool POOL``, checked by ``pool_check`` (optional: None when left out)."""
    default = ... if required else None
    return typer.Option(default, "--pool", metavar="POOL", help=help_text, callback=pool_check)


def node_option(help_text: str) -> Any:
    """``--node NODE``, optional."""
    return typer.Option(None, "--node", metavar="NODE", help=help_text, callback=name_check("node"))


def nodes_option(help_text: str) -> Any:
    """``--node NODE``, repeatable (a list; None when left out)."""
    return typer.Option(
        None, "--node", metavar="NODE", help=help_text, callback=names_check("node")
    )


# -- options of changes -------------------------------------------------------------------
WAIT_OPTION = typer.Option(
    True,
    "--wait/--no-wait",
    help="Wait for the task, showing its progress, and exit 1 with its error if it fails "
    "(default); --no-wait returns at once with the task's id.",
)
TIMEOUT_OPTION = typer.Option(
    DEFAULT_WAIT_TIMEOUT,
    "--timeout",
    min=0.0,
    help="Give up waiting after this many seconds (exit 1; the task goes on).",
)
LONG_TIMEOUT_OPTION = typer.Option(
    LONG_WAIT_TIMEOUT,
    "--timeout",
    min=0.0,
    help="Give up waiting after this many seconds (exit 1; the copy goes on).",
)
YES_OPTION = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation.")


def confirm(question: str, refused: str, yes: bool) -> None:
    """Ask ``question`` unless ``yes``; exit 1 with ``refused`` unless the answer is yes.

    The question goes to stderr and the answer is one line of stdin, so nothing but the
    command's output reaches stdout (`-o json` stays clean); no answer (end of input, as
    from a script without --yes) counts as no."""
    if yes:
        return
    err_console.print(f"{question} [y/N]: ", end="", highlight=False, markup=False)
    answer = sys.stdin.readline()
    if not sys.stdin.isatty() or not answer.endswith("\n"):
        err_console.print()  # no terminal echoed the answer's end of line
    if answer.strip().lower() not in ("y", "yes"):
        fail(f"{refused} (give --yes to skip the question)")


# -- asking for a change, following it ----------------------------------------------------


def change_volume(
    path: str,
    body: dict[str, Any] | None,
    wait: bool,
    timeout: float,
    output: Output,
    *,
    method: str = "POST",
) -> None:
    """Ask for a change (``method`` on ``path``, with the JSON ``body``), then follow the task
    it started (``follow_volume_task``)."""
    with connect() as client:
        answer: dict[str, Any] = client.request(method, path, json=body)
        follow_volume_task(client, answer, wait=wait, timeout=timeout, output=output)


def follow_volume_task(
    client: Client,
    answer: dict[str, Any],
    *,
    wait: bool,
    timeout: float,
    output: Output,
) -> None:
    """After an accepted change (202 ``{"volume", "task"}``): wait for its task showing its
    progress, then say where the volume is now; or, with ``wait`` False, say how to follow
    it. A failed task raises ``TaskFailed`` (one line with its error, exit 1)."""
    task: dict[str, Any] = answer["task"]
    volume: dict[str, Any] | None = answer.get("volume")
    name = str((volume or {}).get("name"))
    if not wait:
        if output is Output.json:
            print_json(answer)
            return
        _say(f"{describe(task)} accepted: {task.get('state')}")
        follow = f"`bollard task wait {task.get('id')}` or `bollard volume show {name}`"
        _say(f"Follow it with {follow}.")
        return
    task = wait_for_task(client, task, timeout=timeout)
    try:
        volume = client.get(volume_path(name))
    except ApiError as exc:
        if exc.status != 404:
            raise
        volume = None  # deleted
    if output is Output.json:
        print_json({"volume": volume, "task": task})
        return
    summary = (task.get("result") or {}).get("summary")
    done = f"{describe(task)} succeeded" + (f": {summary}" if isinstance(summary, str) else "")
    _say(f"{done}; {volume_line(volume) if volume else f'volume {name} is gone'}.")


def volume_line(volume: dict[str, Any]) -> str:
    """``volume data1 is attached to web1 as vdb (10 GiB, pool shared1)``."""
    where = [size_text(volume.get("size_mb")) or "size unknown", f"pool {volume.get('pool')}"]
    if volume.get("node"):
        where.append(f"node {volume['node']}")
    text = f"volume {volume.get('name')} is {volume.get('state')}"
    if volume.get("vm"):
        text += f", attached to {volume['vm']} as {volume.get('device')}"
    return f"{text} ({', '.join(where)})"


def attachment(volume: dict[str, Any]) -> str | None:
    """``web1/vdb`` for an attached volume, None otherwise."""
    if not volume.get("vm"):
        return None
    return f"{volume['vm']}/{volume.get('device') or '?'}"


# -- sizes for people ---------------------------------------------------------------------


def size_text(size_mb: Any) -> str | None:
    """A volume's size, exactly: ``10 GiB``, ``1500 MiB`` (None: unknown)."""
    if not isinstance(size_mb, int):
        return None
    return format_size_mb(size_mb)


def amount_text(size_mb: Any) -> str | None:
    """A capacity or free space, rounded for reading: ``512 MiB``, ``93.4 GiB``, ``1.2 TiB``
    (None: not reported yet)."""
    if not isinstance(size_mb, int | float):
        return None
    for unit, factor in (("TiB", 1024**2), ("GiB", 1024)):
        if size_mb >= factor:
            return f"{size_mb / factor:.1f}".removesuffix(".0") + f" {unit}"
    return f"{size_mb:g} MiB"


def used_percent(capacity_mb: Any, free_mb: Any) -> str | None:
    """``37%`` of a capacity in use (None when either is unknown or the capacity is 0)."""
    if not isinstance(capacity_mb, int | float) or not isinstance(free_mb, int | float):
        return None
    if capacity_mb <= 0:
        return None
    return f"{100 * (capacity_mb - free_mb) / capacity_mb:.0f}%"


def _say(text: str) -> None:
    console.print(text, highlight=False, soft_wrap=True, markup=False)
