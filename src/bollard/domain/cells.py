"""Cells: the parts of a deployment that has outgrown one database.

A cell is an ordinary `bollard server` with its own database, agents, task engine and
reconcilers; the API server (`bollard api`) in front of the cells keeps which cell each node
and each VM is in (the mappings) and routes every call there."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from bollard.domain.errors import InvalidInput

_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def check_cell_name(name: str) -> str:
    if not _NAME.match(name):
        raise InvalidInput(
            f"name: {name!r} is not a cell name (1-63 lower-case letters, digits and '-', "
            "starting and ending with a letter or digit)"
        )
    return name


def check_cell_url(url: str) -> str:
    if not re.match(r"^https?://[^\s/]+(:\d+)?/?$", url):
        raise InvalidInput(
            f"url: {url!r} is not the address of a server (http[s]://HOST[:PORT], no path)"
        )
    return url.rstrip("/")


@dataclass(frozen=True)
class Cell:
    """A cell as the API database keeps it (its admin token is kept sealed, elsewhere)."""

    name: str
    url: str
    ca_pem: str | None
    disabled: bool
    created_at: datetime
    updated_at: datetime
    weight_multiplier: float | None = None  # None: scheduler.cross_cell_weight_multiplier


@dataclass(frozen=True)
class Mapping:
    """Which cell a VM (or a node: `uuid` None) is in."""

    name: str
    cell: str
    uuid: str | None = None
