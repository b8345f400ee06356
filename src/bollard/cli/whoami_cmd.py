"""`bollard whoami`: the user and role the CLI's token acts as, and what it may do."""

from __future__ import annotations

from typing import Any

import typer

from bollard.cli.client import connect
from bollard.cli.output import OUTPUT_OPTION, Output, print_fields, print_json


def register(app: typer.Typer) -> None:
    app.command("whoami")(whoami)


def whoami(output: Output = OUTPUT_OPTION) -> None:
    """Show the user, role and token the CLI's token acts as, and the actions its role may
    do (the web console shows and hides its buttons by the same list)."""
    with connect() as client:
        me: dict[str, Any] = client.get("/whoami")
        url = client.base_url
    if output is Output.json:
        print_json(me)
        return
    print_fields(
        [
            ("server", url),
            ("user", me.get("user")),
            ("role", me.get("role")),
            ("token", me.get("token_id") or "the admin token"),
            ("may", ", ".join(me.get("permissions", []))),
        ]
    )
