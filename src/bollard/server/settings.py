"""Reading and writing cluster settings, typed by the registry in bollard.domain.settings."""

from __future__ import annotations

from typing import Any

from bollard.domain.settings import REGISTRY, lookup
from bollard.server.clock import Clock
from bollard.server.ports import UnitOfWork
from bollard.store import settings as store


class Settings:
    """A `ports.SettingsReader` (blocking: call through `UnitOfWork.run`), and the writer."""

    def __init__(self, *, work: UnitOfWork, clock: Clock) -> None:
        self.work = work
        self.clock = clock

    def get(self, key: str) -> Any:
        setting = lookup(key)
        with self.work.read() as conn:
            raw = store.get(conn, key)
        return setting.default if raw is None else setting.parse(raw)

    def all(self) -> dict[str, Any]:
        with self.work.read() as conn:
            stored = {key: store.get(conn, key) for key in REGISTRY}
        return {
            key: REGISTRY[key].default if raw is None else REGISTRY[key].parse(raw)
            for key, raw in stored.items()
        }

    def set(self, key: str, raw: Any) -> Any:
        setting = lookup(key)
        value = setting.parse(raw)
        with self.work.write() as conn:
            store.put(conn, key, setting.dump(value), self.clock.now())
        return value
