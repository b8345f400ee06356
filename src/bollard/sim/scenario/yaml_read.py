"""Reading a YAML document node by node, so that every refusal names the file and the line.

PyYAML's composer gives the node tree with each node's position (its ``start_mark``); the
readers here turn nodes into Python values, one expected shape at a time, and raise
``ScenarioError`` ("FILE:LINE: what was expected") at the first node that does not fit.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

__all__ = ["Doc", "ScenarioError", "Where"]


class ScenarioError(Exception):
    """A scenario file refused: ``file:line: message`` (``file: message`` when the file as a
    whole is the problem: it cannot be read)."""

    def __init__(self, file: str, line: int, message: str) -> None:
        super().__init__(f"{file}:{line}: {message}" if line > 0 else f"{file}: {message}")
        self.file = file
        self.line = line
        self.message = message


_KINDS = {
    "tag:yaml.org,2002:str": "text",
    "tag:yaml.org,2002:int": "a whole number",
    "tag:yaml.org,2002:float": "a number",
    "tag:yaml.org,2002:bool": "true or false",
    "tag:yaml.org,2002:null": "nothing (null)",
}


def _shown(node: Node) -> str:
    """What a node holds, as a refusal names it."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    if isinstance(node, ScalarNode):
        value = str(node.value)
        text = value if len(value) <= 40 else value[:37] + "..."
        kind = _KINDS.get(node.tag, "a value")
        return f"{kind} {text!r}" if value else "nothing"
    return "something else"


@dataclass(frozen=True)
class Where:
    """A node's place: the file and its 1-based line."""

    file: str
    line: int

    def error(self, message: str) -> ScenarioError:
        return ScenarioError(self.file, self.line, message)


class Doc:
    """One YAML file: its root node, and the readers that check each node's shape."""

    def __init__(self, file: str, text: str) -> None:
        self.file = file
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark is not None else 1
            what = exc.problem or exc.context or "invalid YAML"
            raise ScenarioError(file, line, f"not valid YAML: {what}") from None
        except yaml.YAMLError as exc:
            raise ScenarioError(file, 1, f"not valid YAML: {exc}") from None
        if root is None:
            raise ScenarioError(file, 1, "the file is empty; expected a scenario (a mapping)")
        self.root: Node = root
        self._constructor = yaml.SafeLoader("")

    def where(self, node: Node) -> Where:
        return Where(self.file, node.start_mark.line + 1)

    def error(self, node: Node, message: str) -> ScenarioError:
        return self.where(node).error(message)

    # -- shapes ----------------------------------------------------------------------------

    def mapping(self, node: Node, what: str) -> dict[str, Node]:
        """The keys (text) of a mapping node and their value nodes; duplicates refused."""
        if not isinstance(node, MappingNode):
            raise self.error(
                node, f"{what}: expected a mapping (key: value lines), got {_shown(node)}"
            )
        found: dict[str, Node] = {}
        for key, value in node.value:
            if not isinstance(key, ScalarNode) or key.tag != "tag:yaml.org,2002:str":
                raise self.error(key, f"{what}: expected a name as key, got {_shown(key)}")
            if key.value in found:
                raise self.error(key, f"{what}: {key.value!r} is given twice")
            found[str(key.value)] = value
        return found

    def keys(self, node: Node) -> list[ScalarNode]:
        """The key nodes of a mapping node (checked by ``mapping`` first)."""
        assert isinstance(node, MappingNode)
        return [k for k, _ in node.value if isinstance(k, ScalarNode)]

    def key_line(self, node: Node, key: str) -> int:
        """The line of ``key`` in mapping ``node`` (the node's own line if it has none)."""
        found = next((k for k in self.keys(node) if k.value == key), node)
        return self.where(found).line

    def fields(
        self, node: Node, what: str, *, required: tuple[str, ...] = (), optional: tuple[str, ...]
    ) -> dict[str, Node]:
        """A mapping with only the keys named: every ``required`` one and any ``optional``."""
        found = self.mapping(node, what)
        allowed = (*required, *optional)
        assert isinstance(node, MappingNode)
        for key, _value in node.value:
            if key.value not in allowed:
                raise self.error(
                    key, f"{what}: unknown key {key.value!r}; expected one of {', '.join(allowed)}"
                )
        for key in required:
            if key not in found:
                raise self.error(node, f"{what}: {key!r} is missing")
        return found

    def sequence(self, node: Node, what: str) -> list[Node]:
        if not isinstance(node, SequenceNode):
            raise self.error(
                node, f"{what}: expected a list (lines starting with '- '), got {_shown(node)}"
            )
        return list(node.value)

    def items(self, node: Node, what: str) -> Iterator[tuple[int, Node]]:
        """A list's items, numbered from 1 (for the messages)."""
        yield from enumerate(self.sequence(node, what), start=1)

    def scalar(self, node: Node, what: str) -> Any:
        if not isinstance(node, ScalarNode):
            raise self.error(node, f"{what}: expected a single value, got {_shown(node)}")
        return self._constructor.construct_object(node, deep=True)

    # -- typed values ----------------------------------------------------------------------

    def text(self, node: Node, what: str) -> str:
        value = self.scalar(node, what)
        if not isinstance(value, str) or not value:
            raise self.error(node, f"{what}: expected text, got {_shown(node)}")
        return value

    def name(self, node: Node, what: str) -> str:
        """A name of a node, VM, group or rule: letters, digits, '.', '_', '-' (<= 63)."""
        value = self.scalar(node, what)
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not _is_name(value):
            raise self.error(
                node,
                f"{what}: expected a name (letters, digits, '.', '_' or '-', starting with a "
                f"letter or digit, at most 63 characters), got {_shown(node)}",
            )
        return value

    def boolean(self, node: Node, what: str) -> bool:
        value = self.scalar(node, what)
        if not isinstance(value, bool):
            raise self.error(node, f"{what}: expected true or false, got {_shown(node)}")
        return value

    def integer(self, node: Node, what: str, *, low: int, high: int) -> int:
        value = self.scalar(node, what)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.error(
                node, f"{what}: expected a whole number from {low} to {high}, got {_shown(node)}"
            )
        return value

    def number(self, node: Node, what: str, *, low: float, high: float) -> float:
        value = self.scalar(node, what)
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok or not math.isfinite(float(value)) or not low <= float(value) <= high:
            raise self.error(
                node, f"{what}: expected a number from {low:g} to {high:g}, got {_shown(node)}"
            )
        return float(value)

    def choice(self, node: Node, what: str, choices: tuple[str, ...]) -> str:
        value = self.scalar(node, what)
        if not isinstance(value, str) or value not in choices:
            raise self.error(
                node, f"{what}: expected one of {', '.join(choices)}, got {_shown(node)}"
            )
        return value

    def names(self, node: Node, what: str) -> list[tuple[str, Node]]:
        """One name or a list of names, each with its node."""
        if isinstance(node, SequenceNode):
            found = [(self.name(item, what), item) for item in node.value]
            if not found:
                raise self.error(node, f"{what}: expected at least one name, got an empty list")
            return found
        return [(self.name(node, what), node)]


def _is_name(value: str) -> bool:
    if not 0 < len(value) <= 63 or not value[0].isascii() or not value[0].isalnum():
        return False
    return all(c.isascii() and (c.isalnum() or c in "._-") for c in value)
