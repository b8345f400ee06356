"""Reading and writing cluster settings, typed by the registry in bollard.domain.settings."""

from __future__ import annotations

import logging
import threading
from typing import Any

from bollard.domain.settings import REGISTRY, lookup
from bollard.server.clock import Clock
from bollard.server.ports import UnitOfWork
from bollard.store import events
from bollard.store import settings as store

log = logging.getLogger(__name__)

_warned: set[tuple[str, str]] = set()
_warned_lock = threading.Lock()


def stored_value(key: str, raw: str | None) -> Any:
    """The value of setting `key` stored as `raw` (None: not stored). A stored string that is
    not a valid value (written by an older version, or by hand) reads as the default, with a
    warning logged once per key and value, so one bad row never breaks a reader."""
    value, problem = lookup(key).stored(raw)
    if problem is not None and raw is not None:
        with _warned_lock:
            first = (key, raw) not in _warned
            _warned.add((key, raw))
        if first:
            log.warning(
                "setting %s: the stored value is not valid (%s); using the default %s until "
                "it is set again (`bollard settings set %s VALUE`)",
                key, problem, REGISTRY[key].default, key,
            )  # fmt: skip
    return value


class Settings:
    """A `ports.SettingsReader` (blocking: call through `UnitOfWork.run`), and the writer."""

    def __init__(self, *, work: UnitOfWork, clock: Clock) -> None:
        self.work = work
        self.clock = clock

    def get(self, key: str) -> Any:
        lookup(key)  # NotFound for an unknown key
        with self.work.read() as conn:
            raw = store.get(conn, key)
        return stored_value(key, raw)

    def all(self) -> dict[str, Any]:
        with self.work.read() as conn:
            stored = store.stored(conn)
        return {key: stored_value(key, stored.get(key)) for key in REGISTRY}

    def set(self, key: str, raw: Any) -> Any:
        setting = lookup(key)
        value = setting.parse(raw)
        now = self.clock.now()
        with self.work.write() as conn:
            before = stored_value(key, store.get(conn, key))
            store.put(conn, key, setting.dump(value), now)
            events.add(
                conn,
                "settings.changed",
                f"{key} set to {value!r} (was {before!r})",
                now,
                data={"key": key, "value": value, "previous": before},
            )
        return value
