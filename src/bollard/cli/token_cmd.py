"""`bollard token ...`: API tokens of users. A token is printed once, when it is created; the
server keeps only its hash."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

import typer

from bollard.cli import user_cmd
from bollard.cli.client import connect
from bollard.cli.output import (
    OUTPUT_OPTION,
    Output,
    console,
    fail,
    print_json,
    print_table,
)
from bollard.cli.secret_file import shown_once
from bollard.cli.user_cmd import RoleChoice

token_app = typer.Typer(
    help="API tokens of users: create (shown once), list, revoke.", no_args_is_help=True
)

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^(?:\d+[smhdw])+$")
_PART = re.compile(r"(\d+)([smhdw])")
MAX_SECONDS = 10 * 365 * 86400  # the server's limit: ten years


def register(app: typer.Typer) -> None:
    """`bollard user ...` and `bollard token ...`."""
    user_cmd.register(app)
    app.add_typer(token_app, name="token")


def parse_duration(text: str) -> int:
    """Seconds in "30d", "12h", "90m", "45s", "2w" or a sum such as "1d12h"; ValueError
    (a message for people) otherwise."""
    clean = text.strip().lower()
    if not _DURATION.match(clean):
        raise ValueError(
            f"{text!r} is not a duration: use a number and a unit, s, m, h, d or w "
            "(e.g. 30d, 12h, 1d12h)"
        )
    seconds = sum(int(n) * UNITS[unit] for n, unit in _PART.findall(clean))
    if not 1 <= seconds <= MAX_SECONDS:
        raise ValueError(f"{text!r}: a token expires after 1 second to 10 years")
    return seconds


@token_app.command("create")
def create(
    user: str | None = typer.Option(
        None, "--user", help="Whose token (default: yours, the user of the token you use)."
    ),
    expires: str | None = typer.Option(
        None, "--expires", help="Expire after this long, e.g. 30d, 12h, 2w (default: never)."
    ),
    role: RoleChoice | None = typer.Option(
        None, "--role", help="A narrower role than the user's (default: the user's)."
    ),
    description: str | None = typer.Option(
        None, "--description", help="What the token is for (at most 200 characters)."
    ),
    token_file: Path | None = typer.Option(
        None,
        "--token-file",
        help="Write the token to this file (mode 0600) instead of printing it.",
    ),
    output: Output = OUTPUT_OPTION,
) -> None:
    """Create an API token; it is shown only this once (the server keeps only its hash)."""
    body: dict[str, Any] = {}
    if user is not None:
        body["user"] = user
    if role is not None:
        body["role"] = role.value
    if description is not None:
        body["description"] = description
    if expires is not None:
        try:
            body["expires_in"] = parse_duration(expires)
        except ValueError as exc:
            fail(f"--expires: {exc}")
    with connect() as client:
        answer: dict[str, Any] = client.post("/tokens", body)
    secret, shown = shown_once(answer, token_file)
    if output is Output.json:
        print_json(shown)
        return
    until = f", expires {answer['expires_at']}" if answer.get("expires_at") else ", never expires"
    _say(f"Token {answer['id']} created for user {answer['user']} (role {answer['role']}{until}).")
    if token_file is not None:
        _say(f"The token is in {token_file} (mode 0600); the server keeps only its hash.")
        return
    _say("The token (shown only now; the server keeps only its hash):")
    _say(f"  {secret}")
    _say("Use it with: export BOLLARD_TOKEN=<the token>  (or BOLLARD_TOKEN_FILE=<a file>)")


@token_app.command("list")
def list_tokens(
    user: str | None = typer.Option(
        None, "--user", help="Only this user's (default: yours; an admin sees everyone's)."
    ),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Show at most N tokens."),
    output: Output = OUTPUT_OPTION,
) -> None:
    """API tokens with their state (active, expired, revoked); never the tokens themselves."""
    params = {"user": user} if user is not None else None
    with connect() as client:
        items = client.list_all("/tokens", limit=limit, params=params)
    if output is Output.json:
        print_json(items)
        return
    rows = [
        (
            t.get("id"),
            t.get("user"),
            t.get("role"),
            t.get("state"),
            t.get("description"),
            t.get("created_at"),
            t.get("expires_at") or "never",
            t.get("last_used_at"),
        )
        for t in items
    ]
    columns = ["ID", "USER", "ROLE", "STATE", "DESCRIPTION", "CREATED", "EXPIRES", "LAST USED"]
    print_table(None, columns, rows)


@token_app.command("revoke")
def revoke(
    token_id: str = typer.Argument(..., metavar="ID", help="The token's id (see token list)."),
    output: Output = OUTPUT_OPTION,
) -> None:
    """Revoke a token: the server refuses it at once from now on."""
    with connect() as client:
        answer: dict[str, Any] = client.post(f"/tokens/{quote(token_id, safe='')}/revoke")
    if output is Output.json:
        print_json(answer)
        return
    _say(f"Token {answer['id']} of user {answer['user']} is revoked ({answer['revoked_at']}).")


def _say(text: str) -> None:
    console.print(text, highlight=False, soft_wrap=True, markup=False)
