"""`bollard user ...`: users of the API, each with a role (reader, operator, admin)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any
from urllib.parse import quote

import typer

from bollard.cli.client import connect
from bollard.cli.output import (
    OUTPUT_OPTION,
    Output,
    console,
    print_fields,
    print_json,
    print_table,
)

user_app = typer.Typer(
    help="Users of the API: create, list, show, delete (their tokens: `bollard token`).",
    no_args_is_help=True,
)


class RoleChoice(StrEnum):
    reader = "reader"
    operator = "operator"
    admin = "admin"


ROLE_HELP = (
    "reader (every read), operator (VM and node operations) or admin (everything, "
    "also users, settings and everyone's tokens)."
)


def register(app: typer.Typer) -> None:
    app.add_typer(user_app, name="user")


def _path(name: str) -> str:
    return f"/users/{quote(name, safe='')}"


@user_app.command("create")
def create(
    name: str = typer.Argument(..., help="User name (letters, digits, '.', '_', '-')."),
    role: RoleChoice = typer.Option(..., "--role", help=ROLE_HELP),
    output: Output = OUTPUT_OPTION,
) -> None:
    """Create a user; then give it a token with `bollard token create --user NAME`."""
    with connect() as client:
        user: dict[str, Any] = client.post("/users", {"name": name, "role": role.value})
    if output is Output.json:
        print_json(user)
        return
    console.print(
        f"User {user['name']} created with role {user['role']}. "
        f"Give it a token: bollard token create --user {user['name']}",
        highlight=False,
        soft_wrap=True,
        markup=False,
    )


@user_app.command("list")
def list_users(output: Output = OUTPUT_OPTION) -> None:
    """Every user with its role and how many API tokens it has."""
    with connect() as client:
        items = client.list_all("/users")
    if output is Output.json:
        print_json(items)
        return
    rows = [
        (
            u.get("name"),
            u.get("role"),
            u.get("tokens"),
            "yes" if u.get("builtin") else "",
            u.get("created_at"),
            u.get("created_by"),
        )
        for u in items
    ]
    print_table(None, ["NAME", "ROLE", "TOKENS", "BUILT IN", "CREATED", "CREATED BY"], rows)


@user_app.command("show")
def show(
    name: str = typer.Argument(..., help="User name."), output: Output = OUTPUT_OPTION
) -> None:
    """Show one user."""
    with connect() as client:
        user: dict[str, Any] = client.get(_path(name))
    if output is Output.json:
        print_json(user)
        return
    print_fields(
        [
            (k, user.get(k))
            for k in ("name", "role", "tokens", "builtin", "created_at", "created_by")
        ]
    )


@user_app.command("delete")
def delete(
    name: str = typer.Argument(..., help="User name."), output: Output = OUTPUT_OPTION
) -> None:
    """Delete a user and its API tokens (refused at once from then on)."""
    with connect() as client:
        answer: dict[str, Any] = client.delete(_path(name))
    if output is Output.json:
        print_json(answer)
        return
    console.print(
        f"User {answer['name']} deleted, with its {answer['tokens_deleted']} API token(s).",
        highlight=False,
        soft_wrap=True,
        markup=False,
    )
