"""`bollard settings ...`: cluster settings shared by every server."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import typer

from bollard.cli.client import connect
from bollard.cli.output import OUTPUT_OPTION, Output, print_fields, print_json, print_table

settings_app = typer.Typer(help="Cluster settings: list, get, set.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(settings_app, name="settings")


def _allowed(setting: dict[str, Any]) -> str:
    """What the setting accepts (a server before ranges were shown: its type)."""
    return str(setting.get("allowed") or setting.get("type") or "")


@settings_app.command("list")
def list_settings(output: Output = OUTPUT_OPTION) -> None:
    """Every setting with its value, default and meaning."""
    with connect() as client:
        items: list[dict[str, Any]] = client.get("/settings")
    if output is Output.json:
        print_json(items)
        return
    print_table(
        None,
        ["KEY", "VALUE", "DEFAULT", "ALLOWED", "MEANING"],
        [[s["key"], s["value"], s["default"], _allowed(s), s["help"]] for s in items],
    )


@settings_app.command("get")
def get(
    key: str = typer.Argument(..., help="Setting key, e.g. reconcile.commands.interval."),
    output: Output = OUTPUT_OPTION,
) -> None:
    """Show one setting."""
    with connect() as client:
        setting: dict[str, Any] = client.get(f"/settings/{quote(key, safe='')}")
    if output is Output.json:
        print_json(setting)
    else:
        print_fields(
            [(k, setting[k]) for k in ("key", "value", "default", "type")]
            + [("allowed", _allowed(setting)), ("help", setting["help"])]
        )


# A negative number is a value, not an option: `bollard settings set KEY -1`.
@settings_app.command("set", context_settings={"ignore_unknown_options": True})
def set_(
    key: str = typer.Argument(..., help="Setting key."),
    value: str = typer.Argument(
        ..., help="New value, checked against the setting's type and range (`settings list`)."
    ),
    output: Output = OUTPUT_OPTION,
) -> None:
    """Change a setting for the whole cluster. Numbers must be finite and in the setting's
    range; a refusal names the range."""
    with connect() as client:
        setting: dict[str, Any] = client.request(
            "PUT", f"/settings/{quote(key, safe='')}", json={"value": value}
        )
    if output is Output.json:
        print_json(setting)
    else:
        print(f"{setting['key']} = {setting['value']}")
