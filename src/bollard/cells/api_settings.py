"""Settings through the API server: the API server's own (who may move VMs between cells, the
cross-cell weigher's multiplier: domain/settings.py `CELL_SETTINGS`) are kept in the API
database; every other setting is its cells' (read from each, changed in every one: proxy.py)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from fastapi import Request, Response

from bollard.domain.errors import InvalidInput
from bollard.domain.policy import Identity
from bollard.domain.settings import API_SERVER_KEYS
from bollard.server.api.settings import setting_out
from bollard.server.ports import SettingsStore, UnitOfWork

if TYPE_CHECKING:
    from bollard.cells.proxy import Proxy


class ApiSettings:
    def __init__(self, *, work: UnitOfWork, settings: SettingsStore) -> None:
        self._work = work
        self.store = settings

    async def handle(
        self, request: Request, parts: list[str], body: bytes, proxy: Proxy,
        identity: Identity | None,
    ) -> Response | None:  # fmt: skip
        """The API server's own settings; the list with the cells' (None: a cell setting,
        for the proxy to ask of every cell)."""
        if len(parts) == 2 and parts[1] in API_SERVER_KEYS:
            key = parts[1]
            if request.method == "GET":
                value = await self._work.run(self.store.get, key)
            elif request.method == "PUT":
                try:
                    given = json.loads(body)["value"]
                except (ValueError, KeyError, TypeError):
                    raise InvalidInput('the body must be {"value": ...}') from None
                value = await self._work.run(self.store.set, key, given)
            else:
                return None
            return _json({**setting_out(key, value).model_dump(mode="json"), "cells": None})
        if len(parts) == 1 and request.method == "GET":
            answer = await proxy.every_cell(request, "settings", [], b"", identity)
            items: list[dict[str, Any]] = json.loads(bytes(answer.body))
            mine = await self._work.run(self._mine)
            kept = [i for i in items if i.get("key") not in API_SERVER_KEYS]
            return _json(sorted(kept + mine, key=lambda i: str(i.get("key"))))
        return None

    def _mine(self) -> list[dict[str, Any]]:
        values = self.store.all()
        return [
            {**setting_out(k, values[k]).model_dump(mode="json"), "cells": None}
            for k in sorted(API_SERVER_KEYS)
        ]


def _json(data: Any) -> Response:
    return Response(json.dumps(data), media_type="application/json")
