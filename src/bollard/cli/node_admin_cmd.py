"""`bollard node delete` and `bollard node token rotate`: removing a node from the cluster and
replacing its agent's token."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import typer

from bollard.cli import node_maint_cmd
from bollard.cli.client import connect
from bollard.cli.output import OUTPUT_OPTION, Output, console, print_json
from bollard.cli.secret_file import shown_once

NODE_ARGUMENT = typer.Argument(..., help="Node name.")
node_token_app = typer.Typer(help="A node's agent token: rotate.", no_args_is_help=True)


def register(node_app: typer.Typer) -> None:
    node_app.command("delete")(delete)
    node_app.add_typer(node_token_app, name="token")
    node_maint_cmd.register(node_app)  # node maintenance


def _node(name: str) -> str:
    return f"/nodes/{quote(name, safe='')}"


def delete(
    name: str = NODE_ARGUMENT,
    force: bool = typer.Option(
        False,
        "--force",
        help="Delete it even if its agent is connected (the session is closed) or its host "
        "still reports VMs (they are forgotten). Never while the database says it owns VMs.",
    ),
    output: Output = OUTPUT_OPTION,
) -> None:
    """Remove a node and its agent token (refused while it owns VMs or is in a running task)."""
    with connect() as client:
        answer: dict[str, Any] = client.request(
            "DELETE", _node(name), params={"force": "true" if force else "false"}
        )
    if output is Output.json:
        print_json(answer)
        return
    _say(f"Node {answer['name']} deleted; its agent token is refused from now on.")
    if answer.get("session_closed"):
        _say("Its agent's session was closed.")
    forgotten = answer.get("forgotten_vms") or []
    if forgotten:
        _say(
            f"Its host still had VMs Bollard no longer tracks: {', '.join(forgotten)} "
            "(they keep running there; remove them on the host)."
        )


@node_token_app.command("rotate")
def rotate(
    name: str = NODE_ARGUMENT,
    disconnect: bool = typer.Option(
        False,
        "--disconnect",
        help="Close the agent's current session now (e.g. the old token leaked). Default: "
        "keep it; the agent's next connection needs the new token.",
    ),
    token_file: Path | None = typer.Option(
        None, "--token-file", help="Write the new token to this file (mode 0600) instead."
    ),
    output: Output = OUTPUT_OPTION,
) -> None:
    """Give a node's agent a new token; the old one is refused from now on."""
    params = {"disconnect": "true" if disconnect else "false"}
    with connect() as client:
        answer: dict[str, Any] = client.request("POST", f"{_node(name)}/token", params=params)
    token, shown = shown_once(answer, token_file)
    if output is Output.json:
        print_json(shown)
        return
    _say(f"Node {answer['node']}: new agent token; the old one is refused from now on.")
    if token_file is None:
        _say("The new token (shown only now):")
        _say(f"  {token}")
    else:
        _say(f"The new token is in {token_file} (mode 0600).")
    session = answer.get("session")
    if session == "kept":
        _say(
            "Its agent stays connected for now; write the new token to its token file, then "
            "restart the agent (it reads the file when it starts)."
        )
    elif session == "closed":
        _say("Its agent's session was closed: give it the new token and restart it.")
    else:
        _say("Its agent is not connected here: give it the new token before it starts.")


def _say(text: str) -> None:
    console.print(text, highlight=False, soft_wrap=True, markup=False)
