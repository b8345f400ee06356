"""How the state reconciler fixes the storage classes (bollard.domain.storage_drift).

Each fix reads the record again and looks at the pool again (a storage query to the host
that must have the file) before it acts, so a difference that went away, or that a task took
up, since it was detected is left alone (`Skipped`); a host that does not answer fails the
fix with nothing changed. Records change with compare-and-swap guards (the state, the task
that holds the volume, its place); a file is deleted only by a journaled VOLUME_DELETE.

- volume-missing: the volume goes to ``error`` with the fault "file <f> missing from pool
  <p> on <host>";
- volume-orphan: the file is deleted (only a file named as Bollard names volume files, and
  never a copy whose volume has no file of its own); the unfinished target of a copy whose
  command is still open is left to that copy's abort: the command is cancelled, and an
  aborted copy removes its target;
- volume-stuck: the file there: back at rest (attached if it has a VM, else ready) with the
  fault "left <state> by task <id>"; else a volume being created or deleted loses its
  record, any other goes to ``error``;
- volume-size: the record takes the host's size (the host is the truth for what the file
  holds).
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import Connection

from bollard.domain.drift import Drift, DriftClass
from bollard.domain.errors import BollardError
from bollard.domain.states import CommandType
from bollard.domain.storage import Pool, PoolType, Volume, VolumeState, volume_allowed
from bollard.domain.storage_drift import HostFile, bollard_file
from bollard.server.clock import Clock
from bollard.server.ports import CommandPort, UnitOfWork
from bollard.server.reconcile.state_fixes import Skipped
from bollard.server.reconcile.storage_drift import SHARED_WITNESSES, StorageLooks, task_places
from bollard.store import commands, nodes, pools, tasks, vms, volumes

log = logging.getLogger(__name__)

# A volume whose file is missing goes to error only from a state at rest.
_AT_REST_OK = frozenset({VolumeState.READY, VolumeState.ATTACHED})
# Left without its file by a task that ended: a creation that never made it, a deletion that
# did; the record goes.
_REMOVED_WITHOUT_FILE = frozenset({VolumeState.CREATING, VolumeState.DELETING})


class StorageFixer:
    """Fixes one storage difference (StateFixer routes the storage classes here)."""

    def __init__(
        self, *, work: UnitOfWork, clock: Clock, looks: StorageLooks, commands: CommandPort
    ) -> None:
        self.work = work
        self.clock = clock
        self.looks = looks
        self.commands = commands

    async def fix(self, drift: Drift) -> str:
        if drift.kind is DriftClass.VOLUME_MISSING:
            return await self._missing(drift)
        if drift.kind is DriftClass.VOLUME_ORPHAN:
            return await self._orphan(drift)
        if drift.kind is DriftClass.VOLUME_STUCK:
            return await self._stuck(drift)
        if drift.kind is DriftClass.VOLUME_SIZE:
            return await self._size(drift)
        raise ValueError(f"not a storage class: {drift.kind}")

    # -- reading and looking --------------------------------------------------------------

    def _read(self, volume_id: str) -> tuple[Volume | None, Pool | None]:
        with self.work.read() as conn:
            v = volumes.find_by_id(conn, volume_id)
            return v, (pools.find(conn, v.pool) if v is not None else None)

    async def _volume(self, drift: Drift) -> tuple[Volume, Pool]:
        v, pool = await self.work.run(self._read, str(drift.data["volume_id"]))
        if v is None or pool is None:
            raise Skipped("the volume is no longer in the database")
        if (v.pool, v.node, v.file) != (drift.pool, drift.node, drift.file):
            raise Skipped(f"the volume moved meanwhile (now in pool {v.pool})")
        return v, pool

    def _hosts_of(self, pool: Pool, node: str | None) -> list[str]:
        """The hosts to ask about a file of `pool`: its node (local pool), or the connected
        hosts of the pool (shared)."""
        if pool.type is PoolType.LOCAL:
            return [node] if node is not None else []
        with self.work.read() as conn:
            return sorted(n.name for n in nodes.list_all(conn) if n.connected and pool.sees(n.name))

    async def _look(
        self, pool: Pool, node: str | None, file: str, prefer: str | None = None
    ) -> tuple[str, HostFile | None]:
        """Ask the pool's host(s) now: the host that answered and the file as it lists it
        (None: not there). Raises when no host of the pool answers."""
        hosts = await self.work.run(self._hosts_of, pool, node)
        if prefer in hosts:
            hosts = [prefer, *(h for h in hosts if h != prefer)]
        hosts = hosts[:SHARED_WITNESSES] if pool.type is PoolType.SHARED else hosts
        if not hosts:
            raise BollardError(f"no connected host of pool {pool.name} to look at {file}")
        listings, _ = await self.looks.ask({h: [pool] for h in hosts})
        answered = [h for h in hosts if (pool.name, h) in listings]
        if not answered:
            where = hosts[0] if len(hosts) == 1 else f"any of {', '.join(hosts)}"
            raise BollardError(
                f"no answer from {where} about pool {pool.name}: nothing changed (try again)"
            )
        for h in answered:
            found = listings[(pool.name, h)].get(file)
            if found is not None:
                return h, found
        return answered[0], None

    # -- moves ----------------------------------------------------------------------------

    def _move(
        self, conn: Connection, v: Volume, state: VolumeState, *, release: bool, **values: Any
    ) -> None:
        """Move `v` (as read) to `state`, letting its task go if `release`; Skipped when it
        changed meanwhile."""
        now = self.clock.now()
        guard = {"pool": v.pool, "node": v.node, "file": v.file, "state": v.state.value}
        held = v.task_id
        if state is not v.state and not volume_allowed(v.state, state):
            raise BollardError(f"volume {v.name}: no way from {v.state} to {state}")
        if not volumes.transition(
            conn, v.id, now, held_by=held, state=state, release=release, unchanged=guard,
            **values,
        ):  # fmt: skip
            raise Skipped("the volume changed meanwhile")

    # -- the classes ----------------------------------------------------------------------

    async def _missing(self, drift: Drift) -> str:
        v, pool = await self._volume(drift)
        if v.task_id is not None or v.state not in _AT_REST_OK:
            raise Skipped(
                f"the volume is {v.state} now" + (f" (task {v.task_id})" if v.task_id else "")
            )
        host, found = await self._look(pool, v.node, v.file)
        if found is not None:
            raise Skipped(f"file {v.file} is in pool {pool.name} on {host} again")
        fault = f"file {v.file} missing from pool {pool.name} on {host}"

        def tx() -> None:
            with self.work.write() as conn:
                self._move(conn, v, VolumeState.ERROR, release=False, fault=fault)

        await self.work.run(tx)
        return f"volume {v.name} now error: {fault}"

    async def _size(self, drift: Drift) -> str:
        v, pool = await self._volume(drift)
        if v.task_id is not None or not v.state.at_rest:
            raise Skipped(f"the volume is {v.state} now")
        if v.size_mb != int(drift.data["record_mb"]):
            raise Skipped(f"the record says {v.size_mb} MiB now")
        host, found = await self._look(pool, v.node, v.file, prefer=drift.data.get("host"))
        if found is None:
            raise Skipped(f"file {v.file} is no longer in pool {pool.name} on {host}")
        if found.partial or found.size_mb == v.size_mb:
            raise Skipped(f"{host} lists {found.size_mb} MiB now")

        def tx() -> None:
            with self.work.write() as conn:
                self._move(
                    conn, v, v.state, release=False, size_mb=found.size_mb,
                )  # fmt: skip

        await self.work.run(tx)
        return f"record now {found.size_mb} MiB, as on {host} (was {v.size_mb} MiB)"

    def _task_ended(self, task_id: str | None) -> bool:
        if task_id is None:
            return True
        with self.work.read() as conn:
            found = tasks.get_many(conn, [task_id])
        return not found or found[0].state.ended

    async def _stuck(self, drift: Drift) -> str:
        v, pool = await self._volume(drift)
        if (v.state.value, v.task_id) != (drift.data["state"], drift.data["task_id"]):
            raise Skipped(f"the volume is {v.state} now")
        if not await self.work.run(self._task_ended, v.task_id):
            raise Skipped(f"task {v.task_id} runs again")
        host, found = await self._look(pool, v.node, v.file)
        left = f"left {v.state} by task {v.task_id}" if v.task_id else f"left {v.state} by no task"
        where = f"pool {pool.name} on {host}"

        def tx() -> str:
            with self.work.write() as conn:
                if found is not None:
                    state = VolumeState.ERROR if v.state is VolumeState.ERROR else v.rest_state
                    fault = v.fault if v.state is VolumeState.ERROR and v.fault else left
                    self._move(conn, v, state, release=True, fault=fault)
                    return f"volume {v.name} back {state} (its file is in {where}); fault: {fault}"
                if v.state in _REMOVED_WITHOUT_FILE:
                    now_v = volumes.find_by_id(conn, v.id)
                    if now_v is None or (now_v.state, now_v.task_id) != (v.state, v.task_id):
                        raise Skipped("the volume changed meanwhile")
                    volumes.remove(conn, v.id)
                    return f"volume {v.name} removed: {left}, and its file is not in {where}"
                fault = f"{left}; file {v.file} missing from {where}"
                self._move(conn, v, VolumeState.ERROR, release=True, fault=fault)
                return f"volume {v.name} now error: {fault}"

        return str(await self.work.run(tx))

    # -- orphans ---------------------------------------------------------------------------

    def _explained(self, conn: Connection, pool: Pool, node: str | None, file: str) -> str | None:
        """Why the file is not (or no longer) an orphan, read now; None if it still is."""
        shared = pool.type is PoolType.SHARED
        for v in volumes.in_pool(conn, pool.name):
            if v.file == file and (shared or v.node == node):
                return f"volume {v.name} owns it now"
        for t in tasks.unfinished(conn, include_rolling_back=True):
            for p_name, p_node, p_file in task_places(t.params):
                if (p_name, p_file) == (pool.name, file) and (shared or p_node in (None, node)):
                    return f"task {t.id} ({t.type}) writes it"
        for v in volumes.all_volumes(conn):
            if v.file != file:
                continue
            if v.task_id is not None:
                return f"task {v.task_id} holds volume {v.name} of that file"
            vm = vms.find_by_uuid(conn, v.vm_uuid) if v.vm_uuid else None
            if vm is not None and vm.task_id is not None:
                return f"task {vm.task_id} holds VM {vm.name}, whose volume {v.name} has that file"
        return None

    def _open_copies(self, pool: Pool, node: str | None, file: str) -> list[tuple[str, str]]:
        """The open copy commands (id, node) whose target is this file."""
        shared = pool.type is PoolType.SHARED
        found = []
        with self.work.read() as conn:
            all_nodes = nodes.list_all(conn)
            open_commands = [c for n in all_nodes for c in commands.open_on_node(conn, n.name)]
        for c in open_commands:
            if c.type != CommandType.VOLUME_COPY.value:
                continue
            target = c.args.get("target_pool") or {}
            if (
                c.args.get("target_file") == file
                and target.get("name") == pool.name
                and (shared or c.args.get("target") == node)
            ):
                found.append((c.id, c.node))
        return found

    async def _orphan(self, drift: Drift) -> str:
        file, node = drift.file or "", drift.node
        if not bollard_file(file):
            raise BollardError(
                f"{file} in pool {drift.pool} is not named as Bollard names volume files: "
                "left alone (remove it on the host if nothing uses it)"
            )

        def read() -> tuple[Pool | None, str | None, Volume | None]:
            with self.work.read() as conn:
                pool = pools.find(conn, drift.pool or "")
                if pool is None:
                    return None, None, None
                why = self._explained(conn, pool, node, file)
                copy_of = next((v for v in volumes.all_volumes(conn) if v.file == file), None)
                return pool, why, copy_of

        pool, why, copy_of = await self.work.run(read)
        if pool is None:
            raise Skipped(f"pool {drift.pool} is no longer in the database")
        if why is not None:
            raise Skipped(why)
        if copy_of is not None:
            await self._check_home(copy_of)
        host, found = await self._look(pool, node, file, prefer=drift.data.get("host"))
        if found is None:
            raise Skipped(f"{file} is no longer in pool {pool.name} on {host}")
        if found.partial:
            open_copies = await self.work.run(self._open_copies, pool, node, file)
            if open_copies:
                for cid, on in open_copies:
                    await self.commands.cancel(cid, on)
                ids = ", ".join(f"{cid} on {on}" for cid, on in open_copies)
                return (
                    f"cancelled copy command {ids}: an aborted copy removes its unfinished target"
                )

        def still_orphan(conn: Connection, command_id: str) -> None:
            # In the transaction that writes the command: if the file is no longer an
            # orphan, nothing is written and nothing is sent.
            reason = self._explained(conn, pool, node, file)
            if reason is not None:
                raise Skipped(reason)

        args = {"pool": pool.ref(), "file": file}
        result = await self.commands.call(
            host, CommandType.VOLUME_DELETE, args, record=still_orphan
        )
        gone = "" if result.get("deleted", True) else " (it was gone already)"
        return f"deleted {file} from pool {pool.name} on {host}{gone}"

    async def _check_home(self, v: Volume) -> None:
        """A copy of a volume's file goes only when the volume's own place has its file."""
        home = await self.work.run(self._read, v.id)
        volume, pool = home
        if volume is None or pool is None:
            return
        try:
            host, found = await self._look(pool, volume.node, volume.file)
        except BollardError as exc:
            raise BollardError(
                f"{volume.file} may be the only copy of volume {volume.name}: {exc.message}"
            ) from exc
        if found is None:
            raise BollardError(
                f"volume {volume.name} has no file in pool {pool.name} on {host}: this copy "
                "may be its only one, so it is left alone (migrate or delete the volume)"
            )
