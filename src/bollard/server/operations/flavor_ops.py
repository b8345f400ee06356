"""Flavors: create, change (description and properties only) and delete.

A flavor's size never changes once created (a VM's copy of it must keep meaning what it
meant); a flavor some VM or an unfinished resize still names cannot be deleted (409 naming
them)."""

from __future__ import annotations

from sqlalchemy import Connection

from bollard.domain.errors import Conflict, InvalidInput
from bollard.domain.flavors import Flavor, check_flavor_name, check_properties, check_size
from bollard.domain.ids import new_uuid
from bollard.server.clock import Clock
from bollard.server.ports import UnitOfWork
from bollard.store import events, flavors, migrations_log, vms

_SHOWN = 5  # VM names a refusal lists


class FlavorOperations:
    def __init__(self, *, work: UnitOfWork, clock: Clock) -> None:
        self._work = work
        self._clock = clock

    async def create(
        self,
        name: str,
        vcpus: int,
        memory_mb: int,
        disk_mb: int,
        description: str | None,
        properties: dict[str, str],
    ) -> Flavor:
        try:
            check_flavor_name(name)
            check_size(vcpus, memory_mb, disk_mb)
            check_properties(properties)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None

        def tx() -> Flavor:
            with self._work.write() as conn:
                now = self._clock.now()
                flavor = flavors.create(
                    conn, id=new_uuid(), name=name, vcpus=vcpus, memory_mb=memory_mb,
                    disk_mb=disk_mb, description=description, properties=properties, now=now,
                )  # fmt: skip
                events.add(
                    conn, "flavor.created",
                    f"flavor {name} created: {vcpus} vCPU, {memory_mb} MiB, root disk "
                    f"{disk_mb} MiB", now, data={"flavor": name},
                )  # fmt: skip
                return flavor

        return await self._work.run(tx)

    async def update(
        self,
        name: str,
        *,
        description: str | None = None,
        clear_description: bool = False,
        set_properties: dict[str, str] | None = None,
        unset_properties: list[str] | None = None,
    ) -> Flavor:
        """Change the description, set some properties and remove others (a key both set and
        removed is refused). VMs keep the properties their copy of the flavor has."""
        both = sorted(set(set_properties or {}) & set(unset_properties or []))
        if both:
            raise InvalidInput(f"properties {', '.join(both)}: both set and unset")

        def tx() -> Flavor:
            with self._work.write() as conn:
                current = flavors.get(conn, name)
                properties = {**current.properties, **(set_properties or {})}
                missing = sorted(k for k in unset_properties or [] if k not in properties)
                if missing:
                    raise InvalidInput(f"flavor {name} has no property {', '.join(missing)}")
                for key in unset_properties or []:
                    properties.pop(key)
                try:
                    check_properties(properties)
                except ValueError as exc:
                    raise InvalidInput(str(exc)) from None
                now = self._clock.now()
                flavor = flavors.update_fields(
                    conn, name, now, description=description, properties=properties,
                    clear_description=clear_description,
                )  # fmt: skip
                events.add(conn, "flavor.changed", f"flavor {name} changed", now,
                           data={"flavor": name})  # fmt: skip
                return flavor

        return await self._work.run(tx)

    async def replicate(self, flavor: Flavor) -> tuple[Flavor, bool]:
        """Make this database's flavor `flavor.name` the given one, id included (an API server
        in front of cells keeps its cells' flavors so); True if anything changed. Sizes never
        change: a flavor of that id and another size, or one of another id that is in use,
        is a Conflict."""
        try:
            check_flavor_name(flavor.name)
            check_size(flavor.vcpus, flavor.memory_mb, flavor.disk_mb)
            check_properties(flavor.properties)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None

        def tx() -> tuple[Flavor, bool]:
            with self._work.write() as conn:
                now = self._clock.now()
                current = flavors.find(conn, flavor.name)
                if current is not None and current.id == flavor.id:
                    if current.size != flavor.size:
                        raise Conflict(
                            f"flavor {flavor.name} ({flavor.id}) has another size here: "
                            "a flavor's size never changes"
                        )
                    if (current.description, current.properties) == (
                        flavor.description,
                        flavor.properties,
                    ):
                        return current, False
                    changed = flavors.update_fields(
                        conn, flavor.name, now, description=flavor.description,
                        properties=flavor.properties, clear_description=flavor.description is None,
                    )  # fmt: skip
                    return changed, True
                holder = flavors.find_by_id(conn, flavor.id)
                if holder is not None and holder.name != flavor.name:
                    raise Conflict(f"flavor id {flavor.id} is flavor {holder.name}'s here")
                if current is not None:
                    _check_unused(conn, current)
                    flavors.remove(conn, current.name)
                created = flavors.create(
                    conn, id=flavor.id, name=flavor.name, vcpus=flavor.vcpus,
                    memory_mb=flavor.memory_mb, disk_mb=flavor.disk_mb,
                    description=flavor.description, properties=flavor.properties, now=now,
                )  # fmt: skip
                events.add(conn, "flavor.replicated", f"flavor {flavor.name} replicated", now,
                           data={"flavor": flavor.name})  # fmt: skip
                return created, True

        return await self._work.run(tx)

    async def delete(self, name: str) -> None:
        def tx() -> None:
            with self._work.write() as conn:
                flavor = flavors.get(conn, name)
                _check_unused(conn, flavor)
                flavors.remove(conn, name)
                events.add(conn, "flavor.deleted", f"flavor {name} deleted",
                           self._clock.now(), data={"flavor": name})  # fmt: skip

        await self._work.run(tx)


def _check_unused(conn: Connection, flavor: Flavor) -> None:
    total, names = vms.using_flavor(conn, flavor.id, limit=_SHOWN)
    resizing = migrations_log.count_open_for_flavor(conn, flavor.id)
    if not total and not resizing:
        return
    parts = []
    if total:
        more = f" and {total - len(names)} more" if total > len(names) else ""
        parts.append(f"{total} VM{'s' if total != 1 else ''}: {', '.join(names)}{more}")
    if resizing:
        parts.append(f"{resizing} resize{'s' if resizing != 1 else ''} not yet confirmed or "
                     "reverted")  # fmt: skip
    raise Conflict(f"flavor {flavor.name} is in use by " + "; ".join(parts))
