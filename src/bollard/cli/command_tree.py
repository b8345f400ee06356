"""The `bollard` command tree, made a command at a time (issue 24: start-up time).

Typer turns a whole app into click commands before it parses a single argument: for
`bollard` that is some 250 commands, each with its signature read and its options made, on
every run, about as long as importing Typer itself. ``lazy_command(app)`` gives the same tree
(the same classes, names, options and help: Typer's own functions make every piece of it), but
a group makes a subcommand only when it is asked for it. `bollard vm list` makes the root, the
`vm` group and `list`; `bollard --help` makes the root and its direct subcommands (each group
without its own subcommands).

The app itself is untouched: every command stays registered on it, so Typer's usual
``typer.main.get_command(app)`` (what ``typer.testing.CliRunner`` runs) still makes the whole
tree at once. tests/unit/test_cli_startup.py walks both trees and compares them.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import typer
from typer.core import MarkupMode, TyperGroup
from typer.main import (
    get_command_from_info,
    get_command_name,
    get_group_from_info,
    solve_typer_info_defaults,
)
from typer.models import TyperInfo

if TYPE_CHECKING:
    from typer._click import Command


@dataclass(frozen=True)
class _Settings:
    """What Typer hands from the root app to every command it makes."""

    pretty_exceptions_short: bool
    suggest_commands: bool
    rich_markup_mode: MarkupMode


class LazyCommands(MutableMapping[str, "Command"]):
    """A group's subcommands by name, in Typer's order; each made on first access.

    Listing the names (``keys``, ``in``, ``len``) makes nothing; ``commands[name]`` and
    ``commands.get(name)`` make that one command (once)."""

    def __init__(self, makers: dict[str, Callable[[], Command]]) -> None:
        self._makers = dict(makers)  # the order of the names, and what is still to make
        self._made: dict[str, Command] = {}

    def __getitem__(self, name: str) -> Command:
        made = self._made.get(name)
        if made is None:
            made = self._made[name] = self._makers[name]()
        return made

    def __setitem__(self, name: str, command: Command) -> None:
        self._made[name] = command
        self._makers[name] = functools.partial(self._made.__getitem__, name)

    def __delitem__(self, name: str) -> None:
        del self._makers[name]
        self._made.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return name in self._makers

    def __iter__(self) -> Iterator[str]:
        return iter(self._makers)

    def __len__(self) -> int:
        return len(self._makers)


def lazy_command(app: typer.Typer) -> TyperGroup:
    """The root group of ``app`` (an app with subcommands or a callback, made with
    ``add_completion=False``) as ``typer.main.get_command(app)`` makes it, its subcommands
    made on demand."""
    settings = _Settings(
        pretty_exceptions_short=app.pretty_exceptions_short,
        suggest_commands=app.suggest_commands,
        rich_markup_mode=app.rich_markup_mode,
    )
    return _lazy_group(TyperInfo(app), settings)


def _lazy_group(info: TyperInfo, settings: _Settings) -> TyperGroup:
    app = info.typer_instance
    assert app is not None, "a group is made from a Typer app"
    # The group itself (class, callback, options, help) as Typer makes it, from a copy of the
    # app without subcommands; then its subcommands, each to be made when asked for.
    bare = copy.copy(app)
    bare.registered_commands, bare.registered_groups = [], []
    bare_info = copy.copy(info)
    bare_info.typer_instance = bare
    group = _make_group(bare_info, settings)
    makers: dict[str, Callable[[], Command]] = {}
    for command_info in app.registered_commands:
        assert command_info.callback is not None, "a command has a callback"
        name = command_info.name or get_command_name(command_info.callback.__name__)
        makers[name] = functools.partial(
            get_command_from_info,
            command_info,
            pretty_exceptions_short=settings.pretty_exceptions_short,
            rich_markup_mode=settings.rich_markup_mode,
        )
    for sub_info in app.registered_groups:
        sub_name = solve_typer_info_defaults(sub_info).name
        if sub_name:
            makers[sub_name] = functools.partial(_lazy_group, sub_info, settings)
            continue
        # A group added without a name lends its commands to this one (as Typer does): made
        # now, as Typer makes them.
        for name, command in _make_group(sub_info, settings).commands.items():
            makers[name] = functools.partial(_same, command)
    group.commands = LazyCommands(makers)
    return group


def _make_group(info: TyperInfo, settings: _Settings) -> TyperGroup:
    return get_group_from_info(
        info,
        pretty_exceptions_short=settings.pretty_exceptions_short,
        suggest_commands=settings.suggest_commands,
        rich_markup_mode=settings.rich_markup_mode,
    )


def _same(command: Command) -> Command:
    return command
