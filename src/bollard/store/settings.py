"""Key/value settings stored in the database (shared by every server), and a short-lived
cache of them for hot read paths (`recent`).

The cache is this process's, one per engine. A value it holds was read at most `max_age`
seconds before it is used, so a change made by another server is seen within `max_age`. A
change made through the same engine (`put`) is seen at once after its commit: the cache is
emptied when the connection of a transaction that wrote settings goes back to the pool
(committed or rolled back), and a value read before that is not kept (a read that raced the
write may have read the value it replaced)."""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, event, insert, select, update

from bollard.store.tables import settings

# Set in the connection's info by `put`: its transaction wrote settings (cleared at checkin).
_WROTE = "bollard.settings_written"


def get(conn: Connection, key: str) -> str | None:
    value = conn.execute(select(settings.c.value).where(settings.c.key == key)).scalar()
    return None if value is None else str(value)


def stored(conn: Connection) -> dict[str, str]:
    """Every stored setting (key: raw value), in one statement."""
    rows = conn.execute(_ALL).all()
    return {str(key): str(value) for key, value in rows if value is not None}


_ALL = select(settings.c.key, settings.c.value)


def put(conn: Connection, key: str, value: str, now: datetime) -> None:
    result = conn.execute(
        update(settings).where(settings.c.key == key).values(value=value, updated_at=now)
    )
    if result.rowcount == 0:
        conn.execute(insert(settings).values(key=key, value=value, updated_at=now))
    _cache_of(conn.engine)  # (its pool's checkin listener forgets after this transaction)
    conn.info[_WROTE] = True


def recent(conn: Connection, key: str, *, max_age: float, now: float) -> str | None:
    """`get(conn, key)`, or what it returned to a read through the same engine at most
    `max_age` seconds before `now` (a monotonic clock's seconds, the same clock for every
    call), as the module docstring says."""
    cache = _cache_of(conn.engine)
    found = cache.fresh(key, now - max_age)
    if found is not None:
        return found[0]
    generation = cache.generation
    raw = get(conn, key)
    cache.keep(key, raw, now, generation)
    return raw


@dataclass
class _Cache:
    lock: threading.Lock = field(default_factory=threading.Lock)
    generation: int = 0  # one more at each forget: a value read before it is not kept
    values: dict[str, tuple[str | None, float]] = field(default_factory=dict)  # raw, read at

    def fresh(self, key: str, oldest: float) -> tuple[str | None] | None:
        """(raw,) if `key` was read at `oldest` or later, else None."""
        with self.lock:
            found = self.values.get(key)
        return (found[0],) if found is not None and found[1] >= oldest else None

    def keep(self, key: str, raw: str | None, read_at: float, generation: int) -> None:
        with self.lock:
            if self.generation == generation:
                self.values[key] = (raw, read_at)

    def forget(self) -> None:
        with self.lock:
            self.generation += 1
            self.values.clear()


_caches: weakref.WeakKeyDictionary[Engine, _Cache] = weakref.WeakKeyDictionary()
_caches_lock = threading.Lock()


def _cache_of(engine: Engine) -> _Cache:
    cache = _caches.get(engine)
    if cache is not None:
        return cache
    with _caches_lock:
        cache = _caches.get(engine)
        if cache is None:
            cache = _caches[engine] = _Cache()
            event.listen(engine, "checkin", _forget_after_write(cache))
    return cache


def _forget_after_write(cache: _Cache) -> Any:
    """The pool's checkin listener: a connection whose transaction wrote settings comes back
    (after its commit or rollback), so the cache forgets what it holds."""

    def checkin(_dbapi_connection: Any, record: Any) -> None:
        if record is not None and record.info.pop(_WROTE, False):
            cache.forget()

    return checkin
