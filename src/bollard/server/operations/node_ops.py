"""Operations on nodes: enrolment, power (fencing) settings and actions, an operator's
confirm-down, flush and unflush, and the cluster's maintenance mode."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from bollard.domain.errors import BollardError, InvalidInput, InvalidState
from bollard.domain.ids import new_id
from bollard.domain.models import Node, Task
from bollard.domain.states import NodeHealth
from bollard.power import PowerStatus
from bollard.server.auth import hash_token, new_token
from bollard.server.clock import Clock
from bollard.server.ports import (
    DrainRequests,
    Kick,
    PowerDrivers,
    SecretSealer,
    SettingsStore,
    TaskLauncher,
    Touch,
    UnitOfWork,
)
from bollard.server.tasks.params import NoParams
from bollard.store import events, nodes

log = logging.getLogger(__name__)

MAINTENANCE = "cluster.maintenance"
FENCING_TIMEOUT = "fencing.timeout"
# The health a node may have for an operator to confirm it down.
_CONFIRMABLE = (NodeHealth.DEAD, NodeHealth.FENCE_FAILED, NodeHealth.SUSPECT)

PowerAction = Literal["status", "on", "off", "cycle"]


@dataclass(frozen=True)
class PowerConfig:
    """A node's power driver as an operator sets it (driver None removes it)."""

    driver: str | None
    address: str | None = None
    username: str | None = None
    password: str | None = None


class NodeOperations:
    def __init__(
        self,
        *,
        work: UnitOfWork,
        clock: Clock,
        settings: SettingsStore,
        secrets: SecretSealer,
        power: PowerDrivers,
        drains: DrainRequests,
        launcher: TaskLauncher,
        touch: Touch,
        kick_monitor: Kick,
    ) -> None:
        self._work = work
        self._clock = clock
        self._settings = settings
        self._secrets = secrets
        self._power = power
        self._drains = drains
        self._launcher = launcher
        self._touch = touch
        self._kick_monitor = kick_monitor

    # -- enrolment ----------------------------------------------------------------------

    async def enroll(self, name: str, power: PowerConfig | None = None) -> tuple[Node, str]:
        """Enroll a node; returns it with the agent's token (only its hash is stored). A power
        driver given is stored and tested; a failed test is a warning event, not a refusal."""
        token = new_token()

        def tx() -> Node:
            with self._work.write() as conn:
                return nodes.create(conn, name, hash_token(token), self._clock.now())

        node = await self._work.run(tx)
        if power is not None and power.driver is not None:
            node = await self._work.run(self._store_power, name, power)
            try:  # tested at enrollment; a failure is a warning event, not a refusal
                await self.power_test(name)
            except BollardError as exc:
                log.warning("node %s: power test at enrollment failed: %s", name, exc.message)
        return node, token

    # -- power --------------------------------------------------------------------------

    async def set_power(self, name: str, power: PowerConfig) -> Node:
        """Set (or, with driver None, remove) the node's power driver; a driver set is tested
        (a failure is a warning event)."""
        node = await self._work.run(self._store_power, name, power)
        if power.driver is not None:
            try:
                await self.power_test(name)
            except BollardError as exc:
                log.warning("node %s: power test failed: %s", name, exc.message)
        return node

    async def power_test(self, name: str) -> str:
        """Check the driver and credentials without acting (their answer); a failure is also
        an event."""
        try:
            driver = await self._work.run(self._power.driver_for, name)
            timeout = float(await self._work.run(self._settings.get, FENCING_TIMEOUT))
            detail = await driver.test(timeout)
        except BollardError as exc:
            await self._work.run(
                self._event, name, "node.power_test_failed",
                f"power test of {name} failed: {exc.message}",
            )  # fmt: skip
            raise
        return detail

    async def power_action(self, name: str, action: PowerAction) -> PowerStatus:
        """status, on, off or cycle (off then on); returns the power status afterwards."""
        driver = await self._work.run(self._power.driver_for, name)
        timeout = float(await self._work.run(self._settings.get, FENCING_TIMEOUT))
        if action in ("off", "cycle"):
            await driver.power_off(timeout)
        if action in ("on", "cycle"):
            await driver.power_on(timeout)
        if action != "status":
            await self._work.run(
                self._event,
                name,
                "node.power_action",
                f"node {name}: power {action} by an operator",
            )
        return await driver.status(timeout)

    def _store_power(self, name: str, power: PowerConfig) -> Node:
        """Credentials are sealed; without new ones, a driver keeps the stored ones."""
        if power.driver is not None and not power.address:
            raise InvalidInput("power.address: needed with a power driver")
        secret = None
        if power.username is not None or power.password is not None:
            secret = self._secrets.seal(
                {"username": power.username or "", "password": power.password or ""}
            )
        now = self._clock.now()
        with self._work.write() as conn:
            nodes.get(conn, name)  # 404 for an unknown node
            if power.driver is not None and secret is None:
                secret = nodes.power_secret(conn, name)  # keep the stored credentials
            nodes.set_power(
                conn, name, driver=power.driver,
                address=power.address if power.driver else None,
                secret=secret if power.driver else None, now=now,
            )  # fmt: skip
            where = f" at {power.address}" if power.driver else ""
            events.add(conn, "node.power",
                       f"node {name}: power driver {power.driver or 'removed'}{where}",
                       now, node=name)  # fmt: skip
            return nodes.get(conn, name)

    def _event(self, name: str, kind: str, message: str) -> None:
        with self._work.write() as conn:
            events.add(conn, kind, message, self._clock.now(), node=name)

    # -- health -------------------------------------------------------------------------

    async def confirm_down(self, name: str) -> Task:
        """The operator vouches that the node is off: it counts as fenced, and a `recover`
        task restarts its HA VMs elsewhere."""

        def tx() -> Task:
            now = self._clock.now()
            with self._work.write() as conn:
                node = nodes.get(conn, name)
                if node.health not in _CONFIRMABLE:
                    raise InvalidState(
                        f"node {name} is {node.health}; confirm-down is for a dead node, or one "
                        "whose fence failed"
                    )
                nodes.set_health(conn, name, NodeHealth.FENCED, now, expect=node.health)
                events.add(conn, "node.confirmed_down",
                           f"node {name} confirmed down by an operator (was {node.health})",
                           now, node=name)  # fmt: skip
                return self._launcher.create_in(
                    conn, id=new_id(), type="recover", vm_uuid=None, vm_name=None, node=name,
                    params=NoParams(),
                )  # fmt: skip

        task = await self._work.run(tx)
        self._launcher.launch(task.id)
        self._touch()
        return task

    # -- scheduling ---------------------------------------------------------------------

    async def flush(self, name: str) -> Task:
        """Move every VM off the node; it ends `flushed` (an unflush under way is stopped)."""
        return await self._drains.request(name, "flush")

    async def unflush(self, name: str) -> Task:
        """Bring the node's VMs back and make it `ready` (a flush under way is stopped)."""
        return await self._drains.request(name, "unflush")

    # -- the cluster --------------------------------------------------------------------

    async def maintenance(self) -> bool:
        return bool(await self._work.run(self._settings.get, MAINTENANCE))

    async def set_maintenance(self, on: bool) -> bool:
        """Maintenance mode suspends fencing and recovery (nodes still go suspect and dead);
        the health monitor looks again at once."""
        await self._work.run(self._settings.set, MAINTENANCE, on)

        def note() -> None:
            with self._work.write() as conn:
                state = "on" if on else "off"
                events.add(conn, "cluster.maintenance", f"maintenance mode {state}",
                           self._clock.now())  # fmt: skip

        await self._work.run(note)
        self._kick_monitor()
        return on
