"""The CLI's start-up (issue 24): a simple read imports nothing of the server side, and the
command tree that `bollard` makes on demand (cli/command_tree.py) is the one Typer makes whole.

No timing here: the figures are bench/cli_startup.py's."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer.main

from bollard.cli.client import Client
from bollard.cli.command_tree import LazyCommands, lazy_command
from bollard.cli.main import app

ROOT = Path(__file__).resolve().parents[2]

# What a read must not import: the server side, its database stack, the hypervisor bindings;
# and what only other commands need (their modules import these in the functions using them).
FORBIDDEN = (
    "sqlalchemy", "alembic", "uvicorn", "fastapi", "starlette", "libvirt", "pyroute2",
    "bollard.server", "bollard.store", "bollard.cells", "bollard.agent", "bollard.sim",
    "bollard.fleet", "bollard.power", "websockets", "cryptography", "bollard.domain.sriov",
    "bollard.domain.protocol",
)  # fmt: skip

# Runs `bollard ARGS` in a process of its own against canned answers (httpx.MockTransport),
# then writes the names of the modules it imported to the file named by BOLLARD_TEST_MODULES.
_PROBE = """
import json, os, sys
import httpx
from bollard.cli import client

ANSWERS = {
    "/api/v1/vms": {"items": [{"name": "web1", "status": "ACTIVE", "node": "node1"}],
                    "next_cursor": None},
    "/api/v1/nodes": {"items": [{"name": "node1", "health": "up", "connected": True}],
                      "next_cursor": None},
    "/api/v1/status": {"version": "0.1.0", "database": "sqlite",
                       "nodes": {"total": 1, "connected": 1},
                       "vms": {"total": 1, "by_status": {"ACTIVE": 1}},
                       "maintenance": False, "mode": "single",
                       "servers": {"total": 1, "up": 1, "leader": "server1"}},
}
client.transport_override = httpx.MockTransport(
    lambda request: httpx.Response(200, json=ANSWERS[request.url.path]))
sys.argv = ["bollard", *sys.argv[1:]]
from bollard.cli.main import main
code = 0
try:
    main()
except SystemExit as exc:
    code = exc.code
with open(os.environ["BOLLARD_TEST_MODULES"], "w") as out:
    json.dump({"code": code, "modules": sorted(sys.modules)}, out)
"""


def run_probe(tmp_path: Path, args: list[str]) -> tuple[str, int, list[str]]:
    """`bollard ARGS` in a fresh interpreter: its stdout, exit code and imported modules."""
    found = tmp_path / "modules.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOLLARD_")}
    env.update(
        BOLLARD_URL="http://bollard.test",
        BOLLARD_TOKEN="t",
        BOLLARD_CONFIG_DIR=str(tmp_path / "config"),
        BOLLARD_TEST_MODULES=str(found),
        PYTHONPATH=str(ROOT / "src"),
    )
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.stderr == "", done.stderr
    result = json.loads(found.read_text())
    return done.stdout, int(result["code"]), list(result["modules"])


def forbidden_in(modules: list[str]) -> list[str]:
    return [m for m in modules if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)]


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        (["vm", "list"], "web1"),
        (["node", "list"], "node1"),
        (["status"], "server1"),
        (["--help"], "Usage: bollard"),
        (["vm", "list", "--help"], "Usage: bollard vm list"),
    ],
)
def test_a_simple_read_imports_nothing_of_the_server_side(
    tmp_path: Path, args: list[str], shown: str
) -> None:
    stdout, code, modules = run_probe(tmp_path, args)
    assert code == 0
    assert shown in stdout
    assert "bollard.cli.main" in modules  # (the probe saw the CLI's imports)
    assert forbidden_in(modules) == []


def test_the_probe_sees_a_server_side_import(tmp_path: Path) -> None:
    """The check above can fail: `bollard db status` opens the database itself, and the
    probe finds sqlalchemy and bollard.store among its modules."""
    _, _, modules = run_probe(
        tmp_path, ["db", "status", "--db", f"sqlite:///{tmp_path / 'x.db'}", "-o", "json"]
    )
    assert "sqlalchemy" in forbidden_in(modules)
    assert "bollard.store" in forbidden_in(modules)


def test_a_client_of_an_http_server_reads_no_ca_bundle(monkeypatch: pytest.MonkeyPatch) -> None:
    """httpx's default TLS context reads the whole certifi bundle, a sixth of a read's
    start-up; a client of an http server never makes a TLS connection and reads none."""
    read: list[Any] = []
    load = ssl.SSLContext.load_verify_locations

    def recorded(context: ssl.SSLContext, *args: Any, **kwargs: Any) -> None:
        read.append(args or kwargs)
        load(context, *args, **kwargs)

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", recorded)
    Client("http://bollard.test", "t").close()
    assert read == []
    httpx.Client().close()  # (what it would have cost: the default context reads a bundle)
    assert len(read) == 1


# -- the command tree ------------------------------------------------------------------------


def unwrapped(value: Any) -> Any:
    """A function Typer wrapped (``functools.update_wrapper``) as the function it wraps; the
    type Typer made for an option (its annotation and the settings given) as what it holds."""
    if hasattr(value, "parameter_info") and hasattr(value, "annotation"):
        settings = {key: unwrapped(v) for key, v in vars(value.parameter_info).items()}
        return (value.annotation, type(value.parameter_info), settings, value.file_annotation)
    return getattr(value, "__wrapped__", value) if callable(value) else value


def describe(command: Any) -> dict[str, Any]:
    """Everything a click command holds but the objects made with it (its options as
    everything each holds, its callback as the function it calls), and a group's
    subcommands in order."""
    made = {
        key: unwrapped(value)
        for key, value in vars(command).items()
        if key not in ("params", "commands", "_help_option")
    }
    made["class"] = type(command)
    made["params"] = [
        {key: unwrapped(value) for key, value in vars(p).items() if key != "_runtime_param"}
        | {"class": type(p)}
        for p in command.params
    ]
    if hasattr(command, "commands"):
        made["commands"] = {name: describe(command.commands[name]) for name in command.commands}
    return made


def test_the_lazy_tree_is_the_tree_typer_makes() -> None:
    eager = describe(typer.main.get_command(app))
    lazy = describe(lazy_command(app))
    assert len(eager["commands"]["vm"]["commands"]) > 10  # (the walk went down)
    assert lazy == eager


def test_a_lazy_group_makes_only_the_commands_asked_for() -> None:
    root = lazy_command(app)
    vm = root.commands["vm"]
    assert list(vm.commands)[:3] == list(typer.main.get_command(app).commands["vm"].commands)[:3]
    listed = vm.commands["list"]
    assert vm.commands["list"] is listed  # made once
    made = {n for n in root.commands if n in root.commands._made}  # type: ignore[attr-defined]
    assert made == {"vm"}


def test_lazy_commands_make_each_command_once_and_keep_the_order() -> None:
    calls: list[str] = []

    def maker(name: str) -> Callable[[], Any]:
        def make() -> Any:
            calls.append(name)
            return typer.main.get_command(typer.Typer(name=name, callback=lambda: None))

        return make

    commands = LazyCommands({"b": maker("b"), "a": maker("a")})
    assert list(commands) == ["b", "a"] and "a" in commands and "z" not in commands
    assert len(commands) == 2 and calls == []
    assert commands.get("z") is None and calls == []
    first = commands["a"]
    assert commands.get("a") is first and calls == ["a"]
    replaced = commands["b"]
    commands["b"] = first
    assert commands["b"] is first and commands["b"] is not replaced and list(commands) == ["b", "a"]
    del commands["a"]
    assert list(commands) == ["b"]
    with pytest.raises(KeyError):
        commands["a"]
