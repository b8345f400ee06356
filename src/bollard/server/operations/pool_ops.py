"""Defining storage pools: create, change the hosts that see one, delete.

A pool is a record: hosts learn of it from the commands and storage queries that carry it,
and make its directory (and libvirt's dir pool) on first use; the storage monitor asks the
hosts for its room at once after a change. A pool that holds volumes cannot be deleted, nor
lose a host one of its volumes is on (local pools), nor the host a VM with one of its volumes
runs on.
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection

from bollard.domain.errors import Conflict, InvalidInput
from bollard.domain.storage import DEFAULT_POOL, Pool, PoolType, check_pool_name
from bollard.server.clock import Clock
from bollard.server.ports import Touch, UnitOfWork
from bollard.store import events, nodes, pools, vms, volumes

log = logging.getLogger(__name__)

_SHOWN = 10  # names listed in a refusal at most
_UNSET: Any = object()


def _names(items: list[str]) -> str:
    more = f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
    return ", ".join(items[:_SHOWN]) + more


class PoolOperations:
    def __init__(
        self, *, work: UnitOfWork, clock: Clock, touch: Touch, kick_monitor: Callable[[], None]
    ) -> None:
        self._work = work
        self._clock = clock
        self._touch = touch
        self._kick_monitor = kick_monitor

    async def create(
        self,
        name: str,
        type: PoolType,
        path: str | None,
        node_names: list[str] | None,
        description: str | None,
    ) -> Pool:
        try:
            check_pool_name(name)
        except ValueError as exc:
            raise InvalidInput(f"name: {exc}") from None
        path = _check_path(type, path)

        def tx() -> Pool:
            with self._work.write() as conn:
                _check_nodes(conn, node_names)
                _check_path_free(conn, path, name)
                pool = pools.create(
                    conn, name=name, type=type, path=path, nodes=node_names,
                    description=description, now=self._clock.now(),
                )  # fmt: skip
                where = path or "each host's default directory"
                hosts = ", ".join(pool.nodes) if pool.nodes is not None else "every node"
                events.add(conn, "pool.created",
                           f"{type} pool {name} created at {where}, seen by {hosts}",
                           self._clock.now(), data={"pool": name})  # fmt: skip
                return pool

        pool = await self._work.run(tx)
        self._touch()
        self._kick_monitor()
        return pool

    async def update(
        self, name: str, *, node_names: list[str] | None = _UNSET, description: str | None = _UNSET
    ) -> Pool:
        def tx() -> Pool:
            with self._work.write() as conn:
                pool = pools.get(conn, name)
                values: dict[str, Any] = {}
                if description is not _UNSET:
                    values["description"] = description
                if node_names is not _UNSET:
                    _check_nodes(conn, node_names)
                    _check_losing(conn, pool, node_names)
                    values["nodes"] = node_names
                updated = pools.update_pool(conn, name, self._clock.now(), **values)
                pools.forget_hosts(conn, name, set(updated.nodes) if updated.nodes else None)
                if node_names is not _UNSET:
                    hosts = ", ".join(updated.nodes) if updated.nodes is not None else "every node"
                    events.add(conn, "pool.updated", f"pool {name} now seen by {hosts}",
                               self._clock.now(), data={"pool": name})  # fmt: skip
                return updated

        pool = await self._work.run(tx)
        self._touch()
        self._kick_monitor()
        return pool

    async def delete(self, name: str) -> None:
        def tx() -> None:
            with self._work.write() as conn:
                pool = pools.get(conn, name)
                if pool.name == DEFAULT_POOL:
                    raise Conflict(f"pool {DEFAULT_POOL} is where VM disks go by default: it stays")
                held = volumes.in_pool(conn, name, limit=_SHOWN + 1)
                if held:
                    count, _size = pools.usage(conn).get(name, (len(held), 0))
                    raise Conflict(
                        f"pool {name} holds {count} volume(s) ({_names([v.name for v in held])}):"
                        " delete or migrate them first"
                    )
                pools.remove(conn, name)
                events.add(conn, "pool.deleted", f"pool {name} deleted", self._clock.now(),
                           data={"pool": name})  # fmt: skip

        await self._work.run(tx)
        self._touch()


def _check_path(type: PoolType, path: str | None) -> str | None:
    if path is None or path == "":
        if type is PoolType.SHARED:
            raise InvalidInput("path: a shared pool needs the directory every host mounts")
        return None
    if not posixpath.isabs(path) or "\x00" in path or len(path) > 1024:
        raise InvalidInput(f"path: {path!r} is not an absolute directory path")
    normal = posixpath.normpath(path)
    if normal == "/":
        raise InvalidInput("path: a pool cannot be the root directory")
    return normal


def _check_path_free(conn: Connection, path: str | None, name: str) -> None:
    """No two pools share a directory, or nest (a volume file would belong to both)."""
    if path is None:
        return
    for other in pools.list_all(conn):
        if other.path is None:
            continue
        inside = path.startswith(other.path + "/") or other.path.startswith(path + "/")
        if other.path == path or inside:
            raise Conflict(f"path: pool {other.name} is at {other.path}; pools do not overlap")


def _check_nodes(conn: Connection, names: list[str] | None) -> None:
    if names is None:
        return
    if not names:
        raise InvalidInput("nodes: a pool needs at least one node (or none given: every node)")
    known = {n.name for n in nodes.find_many(conn, set(names))}
    unknown = sorted(set(names) - known)
    if unknown:
        raise InvalidInput(
            f"nodes: no node named {_names(unknown)} (`bollard node list` shows the nodes)"
        )


def _check_losing(conn: Connection, pool: Pool, new: list[str] | None) -> None:
    """Refuse to drop a host that has one of the pool's volumes or runs a VM using one."""
    if new is None:
        return
    keep = set(new)
    stranded: list[str] = []
    for v in volumes.in_pool(conn, pool.name):
        if v.node is not None and v.node not in keep:
            stranded.append(f"{v.name} (on {v.node})")
        elif v.vm_uuid is not None:
            vm = vms.find_by_uuid(conn, v.vm_uuid)
            if vm is not None and vm.node is not None and vm.node not in keep:
                stranded.append(f"{v.name} (used by {vm.name} on {vm.node})")
    if stranded:
        raise Conflict(
            f"pool {pool.name}: the hosts dropped have its volumes: {_names(stranded)}; "
            "migrate them first"
        )
