"""`bollard reconcile`: the database against what the hosts really run."""

from __future__ import annotations

from typing import Any

import typer

from bollard.cli.client import connect
from bollard.cli.output import OUTPUT_OPTION, Output, print_json, print_table

CLASSES = ("stale", "orphan", "power", "spec", "pending", "lost")

HELP = """Show the differences between the database and what the hosts report, by class,
and fix the classes asked for.

Classes: stale (in the database on a node, not on its host), orphan (on a host, not in the
database there), power (observed power differs from the desired one, no task running),
spec (vCPUs or memory on the host differ from the record), pending (task_state left by an
ended task, or a task no server drives), lost (owner node fenced or gone, runs nowhere).

Without a --fix flag nothing changes. The server also reconciles by itself, per class, as
the settings reconcile.auto.<class> say (report or fix; power and pending are fixed by
default). Every fix is recorded as an event (bollard events --kind reconcile.fixed).
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
    fix_all: bool = typer.Option(False, "--fix-all", help="Fix every class."),
    output: Output = OUTPUT_OPTION,
) -> None:
    flags = {
        "stale": fix_stale,
        "orphan": fix_orphans,
        "power": fix_power,
        "spec": fix_spec,
        "pending": fix_pending,
        "lost": fix_lost,
    }
    classes = [c for c in CLASSES if fix_all or flags[c]]
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


def _print_scan(scan: dict[str, Any], *, title: str) -> None:
    diffs = scan["differences"]
    counts = ", ".join(f"{k} {v}" for k, v in scan["counts"].items())
    summary = (
        f"checked {scan['checked_vms']} VMs on {scan['checked_nodes']} nodes in "
        f"{scan['seconds'] * 1000:.1f} ms{_where(scan)}: {counts}"
    )
    if not diffs:
        typer.echo(f"no differences ({summary})")
        return
    print_table(
        title,
        ["CLASS", "NODE", "VM", "RECORD", "HOST", "DETAIL", "AUTO"],
        [
            (
                d["class"],
                d["node"] or "-",
                d["vm"] or d["uuid"],
                d["record"],
                d["host"],
                d["detail"] or "",
                scan["policies"].get(d["class"], ""),
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
        ["RESULT", "CLASS", "NODE", "VM", "ACTION"],
        [(ok, r["class"], r["node"] or "-", r["vm"] or r["uuid"], r["action"]) for ok, r in rows],
    )
