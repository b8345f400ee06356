"""`bollard reconcile`: the database against what the hosts really run."""

from __future__ import annotations

from typing import Any

import typer

from bollard.cli.client import connect
from bollard.cli.output import OUTPUT_OPTION, Output, print_json, print_table

CLASSES = (
    "stale",
    "orphan",
    "power",
    "spec",
    "pending",
    "lost",
    "resize",
    "volume-missing",
    "volume-orphan",
    "volume-stuck",
    "volume-size",
    "vf-unrecorded",
    "vf-conflict",
    "vf-mismatch",
    "vf-leaked",
)
STORAGE = frozenset(c for c in CLASSES if c.startswith("volume-"))
REPORT_ONLY = frozenset({"vf-conflict"})  # no fix: --fix-all leaves them alone

HELP = """Show the differences between the database and what the hosts report, by class,
and fix the classes asked for.

Classes: stale (in the database on a node, not on its host), orphan (on a host, not in the
database there), power (observed power differs from the desired one, no task running),
spec (vCPUs or memory on the host differ from the record), pending (task_state left by an
ended task, or a task no server drives), lost (owner node fenced or gone, runs nowhere),
resize (a resize in VERIFY_RESIZE whose old copy is gone from its source, or a resize record
nothing drives any more).

Storage classes (every host is asked for its pools' files now; a host that does not answer
claims nothing): volume-missing (a volume at rest whose file its pool does not have),
volume-orphan (a file in a pool that no volume record owns and no running task writes),
volume-stuck (a volume left in a transitional state, or held, by an ended task),
volume-size (the file's size on its host differs from the record's).

SR-IOV classes (the record of which VM holds each VF against the VM its host says uses it,
as the hosts report it with every change): vf-unrecorded (a host says a VM uses a VF the
record gives nobody), vf-conflict (the record gives a VF to one VM, the host says another
uses it; reported only), vf-mismatch (a VM holds one VF, its host's definition uses another),
vf-leaked (a VF held by a VM that neither lives on that node nor uses it there).

Without a --fix flag nothing changes. The server also reconciles by itself, per class, as
the settings reconcile.auto.<class> say (report or fix; power, pending, resize,
volume-stuck and volume-size are fixed by default; volume-orphan's default, partial, fixes only the
unfinished targets of copies no task drives). Every fix is recorded as an event (bollard
events --kind reconcile.fixed).
"""


def register(app: typer.Typer) -> None:
    app.command("reconcile", help=HELP)(reconcile)


def _fix_option(cls: str, what: str) -> Any:
    return typer.Option(False, f"--fix-{cls}", help=f"Fix {cls} differences: {what}.")


def reconcile(
    node: str | None = typer.Option(None, "--node", help="Only differences on this node."),
    vm: str | None = typer.Option(None, "--vm", help="Only differences of this VM (name or uuid)."),
    fix_stale: bool = _fix_option("stale", "delete the record (delete operation)"),
    fix_orphans: bool = typer.Option(
        False, "--fix-orphans", help="Fix orphan differences: destroy the VM on its host."
    ),
    fix_power: bool = _fix_option(
        "power", "HA VMs get their desired state back; other records follow the host"
    ),
    fix_spec: bool = _fix_option("spec", "the record follows the host"),
    fix_pending: bool = _fix_option("pending", "release the VM, or resume the task"),
    fix_lost: bool = _fix_option("lost", "restart the VM on another node"),
    fix_resize: bool = _fix_option(
        "resize",
        "confirm a resize whose old copy is gone; end a record nothing drives, releasing its hold",
    ),
    fix_volume_missing: bool = _fix_option(
        "volume-missing", "the volume goes to error, with the reason"
    ),
    fix_volume_orphans: bool = typer.Option(
        False,
        "--fix-volume-orphans",
        help="Fix volume-orphan differences: delete the file (only files named as Bollard "
        "names volume files; a copy's unfinished target: cancel the copy).",
    ),
    fix_volume_stuck: bool = _fix_option(
        "volume-stuck",
        "back at rest if the file is there, else error (or removed if being created or deleted)",
    ),
    fix_volume_size: bool = _fix_option("volume-size", "the record takes the host's size"),
    fix_vf_unrecorded: bool = _fix_option(
        "vf-unrecorded",
        "record the VF as held by the VM's NIC on its physical network (a VM living there)",
    ),
    fix_vf_mismatch: bool = _fix_option(
        "vf-mismatch", "the NIC's claim moves to the VF the host uses"
    ),
    fix_vf_leaked: bool = _fix_option("vf-leaked", "release the VF"),
    fix_all: bool = typer.Option(
        False, "--fix-all", help="Fix every class (but vf-conflict, which has no fix)."
    ),
    output: Output = OUTPUT_OPTION,
) -> None:
    flags = {
        "stale": fix_stale,
        "orphan": fix_orphans,
        "power": fix_power,
        "spec": fix_spec,
        "pending": fix_pending,
        "lost": fix_lost,
        "resize": fix_resize,
        "volume-missing": fix_volume_missing,
        "volume-orphan": fix_volume_orphans,
        "volume-stuck": fix_volume_stuck,
        "volume-size": fix_volume_size,
        "vf-unrecorded": fix_vf_unrecorded,
        "vf-mismatch": fix_vf_mismatch,
        "vf-leaked": fix_vf_leaked,
    }
    classes = [c for c in CLASSES if (fix_all and c not in REPORT_ONLY) or flags.get(c)]
    with connect() as client:
        if classes:
            body = {"classes": classes, "node": node, "vm": vm}
            result = client.post("/reconcile/fix", body)
        else:
            params = {k: v for k, v in (("node", node), ("vm", vm)) if v is not None}
            result = client.get("/reconcile", params=params)
    if output is Output.json:
        print_json(result)
        return
    if classes:
        _print_fixes(result)
        _print_scan(result["remaining"], title="Remaining differences")
        if result["failed"]:
            raise typer.Exit(1)
    else:
        _print_scan(result, title="Differences")


def _where(scan: dict[str, Any]) -> str:
    return " (scan worker process)" if scan.get("scanned_in") == "process" else ""


def _volume(d: dict[str, Any]) -> str:
    """A storage difference's volume (or file) and pool: "data1 (pool fast)"."""
    if d["class"] not in STORAGE:
        return "-"
    return f"{d.get('volume') or d.get('file') or '?'} (pool {d.get('pool') or '?'})"


def _checked(scan: dict[str, Any]) -> str:
    text = f"checked {scan['checked_vms']} VMs on {scan['checked_nodes']} nodes"
    if scan.get("checked_volumes"):
        text += f", {scan['checked_volumes']} volumes"
    silent = scan.get("silent_hosts") or []
    if silent:
        text += f" (no storage answer from {', '.join(silent)})"
    return text


def _print_scan(scan: dict[str, Any], *, title: str) -> None:
    diffs = scan["differences"]
    counts = ", ".join(f"{k} {v}" for k, v in scan["counts"].items())
    summary = f"{_checked(scan)} in {scan['seconds'] * 1000:.1f} ms{_where(scan)}: {counts}"
    if not diffs:
        typer.echo(f"no differences ({summary})")
        return
    storage = any(d["class"] in STORAGE for d in diffs)
    headers = ["CLASS", "NODE", "VM", *(["VOLUME"] if storage else []), "RECORD", "HOST"]
    print_table(
        title,
        [*headers, "DETAIL", "AUTO"],
        [
            (
                d["class"],
                d["node"] or "-",
                d["vm"] or d["uuid"] or "-",
                *([_volume(d)] if storage else []),
                d["record"],
                d["host"],
                d["detail"] or "",
                d.get("auto") or scan["policies"].get(d["class"], ""),
            )
            for d in diffs
        ],
    )
    typer.echo(summary)


def _print_fixes(result: dict[str, Any]) -> None:
    rows = [("fixed", r) for r in result["fixed"]] + [("FAILED", r) for r in result["failed"]]
    if not rows:
        typer.echo("nothing to fix")
        return
    print_table(
        "Fixes",
        ["RESULT", "CLASS", "NODE", "VM/VOLUME", "ACTION"],
        [(ok, r["class"], r["node"] or "-", _subject(r), r["action"]) for ok, r in rows],
    )


def _subject(d: dict[str, Any]) -> str:
    """What a fix was about: the VM, or a storage difference's volume (or file)."""
    return _volume(d) if d["class"] in STORAGE else d["vm"] or d["uuid"]
