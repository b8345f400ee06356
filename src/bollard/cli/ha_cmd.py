"""`bollard ha ...`: HA policies. Groups of nodes with priorities (`ha group`), affinity rules
between VMs (`ha rule`), and every VM's HA request state (`ha status`).

A VM joins a group with `bollard vm meta VM --ha-group GROUP`; its request state, restart and
relocate limits are set there too (`--ha-state`, `--max-restart`, `--max-relocate`). Reads are
open to every role; changes need an operator (permission ha.manage).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import typer

from bollard.cli.client import ApiError, Client, connect
from bollard.cli.node_cmd import LIMIT_OPTION
from bollard.cli.output import (
    OUTPUT_OPTION,
    Output,
    console,
    name_check,
    print_fields,
    print_json,
    print_table,
)
from bollard.domain.errors import InvalidInput
from bollard.domain.ha import format_group_nodes, parse_group_nodes

ha_app = typer.Typer(
    help="HA policies: groups of nodes with priorities (`ha group`), affinity rules between "
    "VMs (`ha rule`) and every VM's HA request state (`ha status`). A VM joins a group with "
    "`vm meta VM --ha-group GROUP`.",
    no_args_is_help=True,
)
group_app = typer.Typer(
    help="HA groups: nodes with priorities. A VM in a group runs on its highest-priority "
    "available node; a restricted group's VMs never run outside it (they wait instead); "
    "unless --nofailback, a VM moves back (live) when a node of higher priority than its own "
    "is available again. Commands: list, show, create, set, delete.",
    no_args_is_help=True,
)
rule_app = typer.Typer(
    help="Affinity rules between VMs: together (on one node) or apart (no two on one node). "
    "A strict rule is a filter (a placement that breaks it is refused: the VM waits, a "
    "migration is refused); a non-strict one a preference, broken only when nothing else fits. "
    "Creation, migration, HA recovery, drain and failback honour them. Commands: list, show, "
    "create, set, delete.",
    no_args_is_help=True,
)

GROUP_ARGUMENT = typer.Argument(..., help="HA group name.", callback=name_check("HA group"))
RULE_ARGUMENT = typer.Argument(..., help="Affinity rule name.", callback=name_check("rule"))
NODES_HELP = (
    "The group's nodes with priorities, as NODE:PRIORITY,... (e.g. node1:2,node2:1; higher "
    "first, -1000..1000; a node without one has 0)."
)
VMS_HELP = "The rule's VMs, comma-separated (at least 2), e.g. db1,db2."
KIND_HELP = "together (on one node) or apart (no two on one node)."


def register(app: typer.Typer) -> None:
    ha_app.add_typer(group_app, name="group")
    ha_app.add_typer(rule_app, name="rule")
    app.add_typer(ha_app, name="ha")


def _nodes(value: str | None) -> str | None:
    """Checks `--nodes` before any request (a usage error naming what is wrong)."""
    if value is not None:
        try:
            parse_group_nodes(value)
        except InvalidInput as exc:
            raise typer.BadParameter(str(exc)) from None
    return value


def _vms(value: str | None) -> str | None:
    if value is None:
        return None
    names = _names(value)
    for name in names:
        name_check("VM")(name)
    if len(names) < 2:
        raise typer.BadParameter(f"{value!r}: give at least 2 different VMs, comma-separated")
    return value


def _names(value: str) -> list[str]:
    return list(dict.fromkeys(n.strip() for n in value.split(",") if n.strip()))


def _kind(value: str | None) -> str | None:
    if value is not None and value not in ("together", "apart"):
        raise typer.BadParameter(f"{value!r} is not together or apart")
    return value


def group_path(name: str) -> str:
    return f"/ha/groups/{quote(name, safe='')}"


def rule_path(name: str) -> str:
    return f"/ha/rules/{quote(name, safe='')}"


def _say(text: str) -> None:
    console.print(text, highlight=False, soft_wrap=True, markup=False)


def _flags(group: dict[str, Any]) -> str:
    flags = [f for f in ("restricted", "nofailback") if group.get(f)]
    return ", ".join(flags) or "-"


# --- groups ------------------------------------------------------------------------------


@group_app.command("list")
def group_list(limit: int | None = LIMIT_OPTION, output: Output = OUTPUT_OPTION) -> None:
    """List HA groups by name: nodes (highest priority first), flags, how many VMs are in
    each."""
    with connect() as client:
        groups = client.list_all("/ha/groups", limit=limit)
    if output is Output.json:
        print_json(groups)
        return
    rows = [
        (g.get("name"), format_group_nodes(g.get("nodes") or {}), _flags(g), g.get("vms"),
         g.get("description") or None)
        for g in groups
    ]  # fmt: skip
    print_table(None, ["NAME", "NODES (PRIORITY)", "FLAGS", "VMS", "DESCRIPTION"], rows)


@group_app.command("show")
def group_show(name: str = GROUP_ARGUMENT, output: Output = OUTPUT_OPTION) -> None:
    """Show one HA group."""
    with connect() as client:
        group: dict[str, Any] = client.get(group_path(name))
    _print_group(group, output)


@group_app.command("create")
def group_create(
    name: str = GROUP_ARGUMENT,
    nodes: str = typer.Option(
        ..., "--nodes", metavar="NODE:PRIO,...", help=NODES_HELP, callback=_nodes
    ),
    restricted: bool = typer.Option(
        False, "--restricted", help="Its VMs never run outside the group (they wait instead)."
    ),
    nofailback: bool = typer.Option(
        False,
        "--nofailback",
        help="Do not move a VM back when a node of higher priority than its own is available "
        "again (default: it moves back, live).",
    ),
    description: str = typer.Option("", "--description", metavar="TEXT", help="Free text."),
    output: Output = OUTPUT_OPTION,
) -> None:
    """Define an HA group: nodes with priorities. Put VMs in it with
    `bollard vm meta VM --ha-group NAME`."""
    body = {
        "name": name, "nodes": parse_group_nodes(nodes), "restricted": restricted,
        "nofailback": nofailback, "description": description,
    }  # fmt: skip
    with connect() as client:
        group: dict[str, Any] = client.post("/ha/groups", body)
    if output is Output.json:
        print_json(group)
        return
    _say(f"HA group {group.get('name')} created: {format_group_nodes(group.get('nodes') or {})}.")


@group_app.command("set")
def group_set(
    name: str = GROUP_ARGUMENT,
    nodes: str | None = typer.Option(
        None,
        "--nodes",
        metavar="NODE:PRIO,...",
        callback=_nodes,
        help=NODES_HELP + " The group's nodes become exactly these.",
    ),
    restricted: bool | None = typer.Option(
        None, "--restricted/--unrestricted", help="Never outside the group, or may leave it."
    ),
    nofailback: bool | None = typer.Option(
        None, "--nofailback/--failback", help="Do not move VMs back, or do (the default)."
    ),
    description: str | None = typer.Option(
        None, "--description", metavar="TEXT", help="New description ('' clears it)."
    ),
    output: Output = OUTPUT_OPTION,
) -> None:
    """Change an HA group (options left out are unchanged). Its VMs follow the new
    priorities at their next placement, and by failback unless --nofailback."""
    body: dict[str, Any] = {}
    if nodes is not None:
        body["nodes"] = parse_group_nodes(nodes)
    for key, value in (("restricted", restricted), ("nofailback", nofailback),
                       ("description", description)):  # fmt: skip
        if value is not None:
            body[key] = value
    if not body:
        raise typer.BadParameter(
            "nothing to change: give --nodes, --restricted/--unrestricted, "
            "--nofailback/--failback or --description"
        )
    with connect() as client:
        group: dict[str, Any] = client.request("PATCH", group_path(name), json=body)
    _print_group(group, output)


@group_app.command("delete")
def group_delete(name: str = GROUP_ARGUMENT) -> None:
    """Delete an HA group. Refused while VMs are in it (the message names them): take them
    out first with `bollard vm meta VM --ha-group ''`."""
    with connect() as client:
        client.delete(group_path(name))
    _say(f"HA group {name} deleted.")


def _print_group(group: dict[str, Any], output: Output) -> None:
    if output is Output.json:
        print_json(group)
        return
    print_fields(
        [
            ("name", group.get("name")),
            ("nodes", format_group_nodes(group.get("nodes") or {})),
            ("restricted", "yes" if group.get("restricted") else "no"),
            ("failback", "no" if group.get("nofailback") else "yes"),
            ("vms", group.get("vms")),
            ("description", group.get("description") or None),
            ("created_at", group.get("created_at")),
            ("updated_at", group.get("updated_at")),
        ]
    )


# --- rules -------------------------------------------------------------------------------


@rule_app.command("list")
def rule_list(limit: int | None = LIMIT_OPTION, output: Output = OUTPUT_OPTION) -> None:
    """List affinity rules by name: kind, strict or not, their VMs."""
    with connect() as client:
        rules = client.list_all("/ha/rules", limit=limit)
    if output is Output.json:
        print_json(rules)
        return
    rows = [
        (r.get("name"), r.get("kind"), "yes" if r.get("strict") else "no",
         ", ".join(r.get("vms") or []), r.get("description") or None)
        for r in rules
    ]  # fmt: skip
    print_table(None, ["NAME", "KIND", "STRICT", "VMS", "DESCRIPTION"], rows)


@rule_app.command("show")
def rule_show(name: str = RULE_ARGUMENT, output: Output = OUTPUT_OPTION) -> None:
    """Show one affinity rule."""
    with connect() as client:
        rule: dict[str, Any] = client.get(rule_path(name))
    _print_rule(rule, output)


@rule_app.command("create")
def rule_create(
    name: str = RULE_ARGUMENT,
    kind: str = typer.Option(..., "--kind", help=KIND_HELP, callback=_kind),
    vms: str = typer.Option(..., "--vms", metavar="VM,VM,...", help=VMS_HELP, callback=_vms),
    strict: bool = typer.Option(
        False,
        "--strict",
        help="A filter: a placement that breaks the rule is refused (default: a preference, "
        "broken only when nothing else fits).",
    ),
    description: str = typer.Option("", "--description", metavar="TEXT", help="Free text."),
    output: Output = OUTPUT_OPTION,
) -> None:
    """Define an affinity rule between VMs. VMs placed already stay where they are; the rule
    applies to their next placement (creation, migration, HA recovery, drain, failback)."""
    body = {"name": name, "kind": kind, "strict": strict, "vms": _names(vms),
            "description": description}  # fmt: skip
    with connect() as client:
        rule: dict[str, Any] = client.post("/ha/rules", body)
    if output is Output.json:
        print_json(rule)
        return
    _say(f"Affinity rule {rule.get('name')} created: {_rule_text(rule)}.")


@rule_app.command("set")
def rule_set(
    name: str = RULE_ARGUMENT,
    kind: str | None = typer.Option(None, "--kind", help=KIND_HELP, callback=_kind),
    vms: str | None = typer.Option(
        None,
        "--vms",
        metavar="VM,VM,...",
        callback=_vms,
        help=VMS_HELP + " The rule's VMs become exactly these.",
    ),
    strict: bool | None = typer.Option(
        None, "--strict/--no-strict", help="A filter, or a preference."
    ),
    description: str | None = typer.Option(
        None, "--description", metavar="TEXT", help="New description ('' clears it)."
    ),
    output: Output = OUTPUT_OPTION,
) -> None:
    """Change an affinity rule (options left out are unchanged)."""
    body: dict[str, Any] = {}
    if vms is not None:
        body["vms"] = _names(vms)
    for key, value in (("kind", kind), ("strict", strict), ("description", description)):
        if value is not None:
            body[key] = value
    if not body:
        raise typer.BadParameter(
            "nothing to change: give --kind, --vms, --strict/--no-strict or --description"
        )
    with connect() as client:
        rule: dict[str, Any] = client.request("PATCH", rule_path(name), json=body)
    _print_rule(rule, output)


@rule_app.command("delete")
def rule_delete(name: str = RULE_ARGUMENT) -> None:
    """Delete an affinity rule (its VMs stay where they are)."""
    with connect() as client:
        client.delete(rule_path(name))
    _say(f"Affinity rule {name} deleted.")


def _rule_text(rule: dict[str, Any]) -> str:
    strict = "strict" if rule.get("strict") else "non-strict"
    return f"{strict} {rule.get('kind')}: {', '.join(rule.get('vms') or [])}"


def _print_rule(rule: dict[str, Any], output: Output) -> None:
    if output is Output.json:
        print_json(rule)
        return
    print_fields(
        [
            ("name", rule.get("name")),
            ("kind", rule.get("kind")),
            ("strict", "yes" if rule.get("strict") else "no"),
            ("vms", ", ".join(rule.get("vms") or []) or None),
            ("description", rule.get("description") or None),
            ("created_at", rule.get("created_at")),
            ("updated_at", rule.get("updated_at")),
        ]
    )


# --- status ------------------------------------------------------------------------------

STATUS_KEYS = ("name", "node", "status", "ha_state", "ha_group", "ha_restarts", "max_restart",
               "ha_relocates", "max_relocate", "fault")  # fmt: skip


def _setting(client: Client, key: str) -> Any:
    """A setting's value; None from a server without it."""
    try:
        answer: dict[str, Any] = client.get(f"/settings/{key}")
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise
    return answer.get("value")


def _count(done: Any, own: Any, setting: Any) -> str:
    limit = own if own is not None else setting
    return f"{done or 0}/{'?' if limit is None else limit}"


@ha_app.command("status")
def status(
    group: str | None = typer.Option(
        None, "--group", metavar="GROUP", help="Only the VMs of this HA group."
    ),
    state: str | None = typer.Option(
        None,
        "--state",
        help="Only VMs in this request state: started, stopped, disabled, ignored or error.",
    ),
    output: Output = OUTPUT_OPTION,
) -> None:
    """Every VM with its HA request state (started, stopped, disabled, ignored, error), its
    group, node and status, and its failed starts and relocations against their limits
    (restarts 1/2: one failed start retried of 2 allowed; limits from the VM, else from the
    settings ha.max_restart and ha.max_relocate)."""
    with connect() as client:
        vms = client.list_all("/vms")
        max_restart = _setting(client, "ha.max_restart")
        max_relocate = _setting(client, "ha.max_relocate")
    shown = [
        {k: v.get(k) for k in STATUS_KEYS}
        for v in vms
        if (group is None or v.get("ha_group") == group)
        and (state is None or v.get("ha_state") == state)
    ]
    if output is Output.json:
        print_json(shown)
        return
    rows = [
        (v["name"], v["ha_state"], v["ha_group"], v["node"], v["status"],
         _count(v["ha_restarts"], v["max_restart"], max_restart),
         _count(v["ha_relocates"], v["max_relocate"], max_relocate), v["fault"])
        for v in shown
    ]  # fmt: skip
    print_table(
        None, ["VM", "HA STATE", "GROUP", "NODE", "STATUS", "RESTARTS", "RELOCATES", "FAULT"], rows
    )
