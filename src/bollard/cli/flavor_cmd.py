"""`bollard flavor ...`: named VM sizes (vCPUs, memory, root disk, properties): create, list,
show, set, delete.

A VM created (`vm create --flavor`) or resized (`vm resize --flavor`) with a flavor keeps a
copy of it as it was then, so changing or deleting a flavor changes no VM. The size of a
flavor never changes: make a new flavor for a new size. Reads are open to every role;
changes need an admin (permission flavor.manage).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import typer

from bollard.cli.client import connect
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
from bollard.cli.vm_cmd import parse_disk_size
from bollard.cli.vm_common import format_size_mb
from bollard.domain.flavors import (
    MAX_MEMORY_MB,
    MAX_PROPERTY_VALUE,
    MAX_VCPUS,
    MIN_MEMORY_MB,
    PROPERTY_KEY,
)

flavor_app = typer.Typer(
    help="Flavors, named VM sizes (vCPUs, memory, root disk, properties): create, list, show, "
    "set, delete. `vm create --flavor` and `vm resize --flavor` use them; a VM keeps its own "
    "copy of its flavor, so changing or deleting a flavor changes no VM.",
    no_args_is_help=True,
)

FLAVOR_ARGUMENT = typer.Argument(..., help="Flavor name.", callback=name_check("flavor"))
_KEY = re.compile(PROPERTY_KEY)
_KEY_HINT = "a key is 1 to 255 letters, digits, '_', '.', ':' or '-'"


def register(app: typer.Typer) -> None:
    app.add_typer(flavor_app, name="flavor")


def parse_property(value: str) -> tuple[str, str]:
    """`KEY=VALUE` as (key, value); anything else is a usage error (exit code 2)."""
    key, sep, item = value.partition("=")
    if not sep:
        raise typer.BadParameter(f"{value!r} is not KEY=VALUE (e.g. hw:cpu_policy=dedicated)")
    check_key(key)
    if len(item) > MAX_PROPERTY_VALUE:
        raise typer.BadParameter(
            f"property {key!r}: the value is longer than {MAX_PROPERTY_VALUE} characters"
        )
    return key, item


def check_key(key: str) -> str:
    if not _KEY.fullmatch(key):
        raise typer.BadParameter(f"{key!r} is not a property key: {_KEY_HINT}")
    return key


def _properties_check(values: list[str] | None) -> list[str] | None:
    for value in values or []:
        parse_property(value)
    return values


def _keys_check(values: list[str] | None) -> list[str] | None:
    for value in values or []:
        check_key(value)
    return values


def _properties(values: list[str] | None) -> dict[str, str]:
    """The `--property` values as a dict (the last of a repeated key wins)."""
    return dict(parse_property(v) for v in values or [])


def parse_root_disk(value: str) -> int:
    """`--disk`: 0 (no root disk, the default), or a size as `vm create --disk` takes it,
    in MiB."""
    return 0 if value.strip() == "0" else parse_disk_size(value)


def property_option(help_text: str) -> Any:
    return typer.Option(
        None, "--property", metavar="KEY=VALUE", help=help_text, callback=_properties_check
    )


def flavor_path(name: str) -> str:
    return f"/flavors/{quote(name, safe='')}"


@flavor_app.command("create")
def create(
    name: str = FLAVOR_ARGUMENT,
    vcpus: int = typer.Option(..., "--vcpus", min=1, max=MAX_VCPUS, help="Number of virtual CPUs."),
    memory: int = typer.Option(
        ..., "--memory", "--memory-mb", min=MIN_MEMORY_MB, max=MAX_MEMORY_MB, help="Memory in MiB."
    ),
    disk: int | None = typer.Option(
        None,
        "--disk",
        metavar="SIZE",
        parser=parse_root_disk,
        help="Root disk (vda) of each VM made with it: MiB, or e.g. 512M, 20G; 0 (default): "
        "none, the VM gets only the disks given with `vm create --disk`. A resize to this "
        "flavor grows a VM's root disk to it, never shrinks one (a smaller one is refused).",
    ),
    prop: list[str] | None = property_option(
        "A property KEY=VALUE, free text kept with the flavor and copied into each VM made "
        "with it (e.g. hw:cpu_policy=dedicated); repeat for more."
    ),
    description: str | None = typer.Option(
        None, "--description", metavar="TEXT", help="Free text for people."
    ),
    output: Output = OUTPUT_OPTION,
) -> None:
    """Define a flavor: a named size for VMs. Its size never changes once made (make another
    flavor for another size); its properties and description may (`flavor set`)."""
    body: dict[str, Any] = {
        "name": name,
        "vcpus": vcpus,
        "memory_mb": memory,
        "disk_mb": disk or 0,
        "description": description,
        "properties": _properties(prop),
    }
    with connect() as client:
        flavor: dict[str, Any] = client.post("/flavors", body)
    if output is Output.json:
        print_json(flavor)
        return
    _say(f"Flavor {flavor.get('name')} created: {size_text(flavor)}.")


@flavor_app.command("list")
def list_flavors(limit: int | None = LIMIT_OPTION, output: Output = OUTPUT_OPTION) -> None:
    """List flavors by name: size, how many VMs have each as their flavor now, properties."""
    with connect() as client:
        flavors = client.list_all("/flavors", limit=limit)
    if output is Output.json:
        print_json(flavors)
        return
    rows = [
        (
            f.get("name"),
            f.get("vcpus"),
            _mib(f.get("memory_mb")),
            _disk(f.get("disk_mb")),
            f.get("used_by"),
            properties_text(f.get("properties")) or None,
        )
        for f in flavors
    ]
    print_table(None, ["NAME", "VCPUS", "MEMORY", "ROOT DISK", "USED BY", "PROPERTIES"], rows)


@flavor_app.command("show")
def show(name: str = FLAVOR_ARGUMENT, output: Output = OUTPUT_OPTION) -> None:
    """Show one flavor."""
    with connect() as client:
        flavor: dict[str, Any] = client.get(flavor_path(name))
    _print_flavor(flavor, output)


@flavor_app.command("set")
def set_(
    name: str = FLAVOR_ARGUMENT,
    prop: list[str] | None = property_option(
        "Set a property KEY=VALUE (added, or replacing the key's value); repeat for more."
    ),
    unset: list[str] | None = typer.Option(
        None,
        "--unset-property",
        metavar="KEY",
        help="Remove a property; repeat for more.",
        callback=_keys_check,
    ),
    description: str | None = typer.Option(
        None, "--description", metavar="TEXT", help="New description."
    ),
    no_description: bool = typer.Option(False, "--no-description", help="Remove the description."),
    output: Output = OUTPUT_OPTION,
) -> None:
    """Change a flavor's properties or description (its size never changes).

    VMs already made with the flavor keep the copy they took: the change applies to the VMs
    created or resized with it from now on."""
    if description is not None and no_description:
        raise typer.BadParameter("give --description TEXT or --no-description, not both")
    properties = _properties(prop)
    both = sorted(set(properties) & set(unset or []))
    if both:
        raise typer.BadParameter(
            f"property {', '.join(both)} is both set and unset: give it to one of --property "
            "and --unset-property"
        )
    body: dict[str, Any] = {}
    if properties:
        body["properties"] = properties
    if unset:
        body["unset_properties"] = list(dict.fromkeys(unset))
    if description is not None or no_description:
        body["description"] = description
    if not body:
        raise typer.BadParameter(
            "nothing to change: give --property, --unset-property, --description or "
            "--no-description"
        )
    with connect() as client:
        flavor: dict[str, Any] = client.request("PATCH", flavor_path(name), json=body)
    _print_flavor(flavor, output)


@flavor_app.command("delete")
def delete(name: str = FLAVOR_ARGUMENT) -> None:
    """Delete a flavor. Refused while a VM has it as its flavor, or a resize not yet
    confirmed or reverted names it (the message lists the VMs)."""
    with connect() as client:
        client.delete(flavor_path(name))
    _say(f"Flavor {name} deleted.")


def _print_flavor(flavor: dict[str, Any], output: Output) -> None:
    if output is Output.json:
        print_json(flavor)
        return
    used_by = flavor.get("used_by")
    print_fields(
        [
            ("name", flavor.get("name")),
            ("id", flavor.get("id")),
            ("vcpus", flavor.get("vcpus")),
            ("memory", _mib(flavor.get("memory_mb"))),
            ("root disk", _disk(flavor.get("disk_mb"))),
            ("description", flavor.get("description")),
            ("properties", properties_text(flavor.get("properties")) or "none"),
            ("used by", None if used_by is None else f"{used_by} VM{'' if used_by == 1 else 's'}"),
            ("created_at", flavor.get("created_at")),
            ("updated_at", flavor.get("updated_at")),
        ]
    )


def size_text(flavor: dict[str, Any]) -> str:
    """'2 vCPUs, 4 GiB memory, root disk 20 GiB' (or 'no root disk')."""
    vcpus = flavor.get("vcpus")
    disk = flavor.get("disk_mb") or 0
    root = f"root disk {format_size_mb(int(disk))}" if disk else "no root disk"
    return (
        f"{vcpus} vCPU{'' if vcpus == 1 else 's'}, {_mib(flavor.get('memory_mb'))} memory, {root}"
    )


def properties_text(properties: dict[str, Any] | None) -> str:
    """'hw:cpu_policy=dedicated, tier=gold' (by key), '' for none."""
    return ", ".join(f"{k}={v}" for k, v in sorted((properties or {}).items()))


def _mib(size_mb: Any) -> str | None:
    return None if size_mb is None else format_size_mb(int(size_mb))


def _disk(disk_mb: Any) -> str | None:
    if disk_mb is None:
        return None
    return format_size_mb(int(disk_mb)) if disk_mb else "none"


def _say(text: str) -> None:
    console.print(text, highlight=False, soft_wrap=True, markup=False)
