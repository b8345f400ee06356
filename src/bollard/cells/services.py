"""What the API server's routers use, built once by the assembly (cells/assembly.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from bollard.cells.directory import CellDirectory
from bollard.cells.flavor_sync import FlavorSync
from bollard.cells.placement import Placement
from bollard.cells.proxy import Proxy
from bollard.server.api.deps import CoreServices
from bollard.server.operations.flavor_ops import FlavorOperations


@dataclass(frozen=True)
class CellServices(CoreServices):
    directory: CellDirectory
    placement: Placement
    proxy: Proxy
    flavor_sync: FlavorSync
    flavor_ops: FlavorOperations
    discover: Callable[[], None]  # run a discovery pass soon (after cells changed)
    db_kind: str


def cell_services(request: Request) -> CellServices:
    found: CellServices = request.app.state.services
    return found


CellsDep = Annotated[CellServices, Depends(cell_services)]
