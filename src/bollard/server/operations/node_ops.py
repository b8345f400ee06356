"""Operations on nodes: enrolment, power (fencing) settings and actions, an operator's
confirm-down, flush and unflush, and the cluster's maintenance mode."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

from bollard.domain.errors import AlreadyExists, BollardError, InvalidInput, InvalidState
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
    """A node's power driver as an operator sets it (driver None removes it). It is tested
    before it is stored; `store_untested` stores it even when the test fails."""

    driver: str | None
    address: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    store_untested: bool = False


@dataclass(frozen=True)
class PowerTest:
    """What the test of a power driver said before it was stored."""

    verified: bool
    detail: str


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
        driver given is tested first: if the test fails, nothing is enrolled (unless
        `store_untested`)."""
        token = new_token()
        tested = None
        if power is not None and power.driver is not None:

            def taken() -> bool:
                with self._work.read() as conn:
                    return bool(nodes.find_many(conn, {name}))

            if await self._work.run(taken):
                raise AlreadyExists(f"node {name!r} already exists")
            tested = await self._test_candidate(name, power)

        def tx() -> Node:
            now = self._clock.now()
            with self._work.write() as conn:
                created = nodes.create(conn, name, hash_token(token), now)
                events.add(conn, "node.enrolled", f"node {name} enrolled", now, node=name)
                return created

        node = await self._work.run(tx)
        if power is not None and tested is not None:
            node = await self._work.run(self._store_power, name, power, tested)
        return node, token

    # -- power --------------------------------------------------------------------------

    async def set_power(self, name: str, power: PowerConfig) -> tuple[Node, PowerTest | None]:
        """Set (or, with driver None, remove) the node's power driver. A driver is tested
        before it is stored: a failed test stores nothing and fails the call, unless
        `store_untested` (then it is stored, and the answer says it was not verified)."""

        def exists() -> None:
            with self._work.read() as conn:
                nodes.get(conn, name)  # 404 for an unknown node

        await self._work.run(exists)
        tested = None
        if power.driver is not None:
            tested = await self._test_candidate(name, power)
        node = await self._work.run(self._store_power, name, power, tested)
        return node, tested

    async def _test_candidate(self, name: str, power: PowerConfig) -> PowerTest:
        """Test settings not stored yet; InvalidInput (nothing stored) when the test fails,
        unless `store_untested`."""
        assert power.driver is not None
        if not power.address or not power.address.strip():
            raise InvalidInput("power.address: needed with a power driver")
        try:
            driver = await self._work.run(
                self._power.candidate, name, power.driver, power.address,
                power.username, power.password,
            )  # fmt: skip
            timeout = float(await self._work.run(self._settings.get, FENCING_TIMEOUT))
            return PowerTest(verified=True, detail=await driver.test(timeout))
        except BollardError as exc:
            failed = exc.message
        if not power.store_untested:
            await self._work.run(
                self._event, name, "node.power_test_failed",
                f"power test of {name} ({power.driver} at {power.address}) failed, nothing "
                f"stored: {failed}",
            )  # fmt: skip
            raise InvalidInput(
                f"power test of {name} failed, nothing was stored: {failed} (fix the driver "
                "settings, or store them untested: --store-untested, store_untested in the API)",
                code="power-test-failed",
            )
        log.warning("node %s: power driver stored untested: %s", name, failed)
        return PowerTest(verified=False, detail=failed)

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

    def _store_power(self, name: str, power: PowerConfig, tested: PowerTest | None) -> Node:
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
            how = ""
            if tested is not None:
                how = (f" (tested: {tested.detail})" if tested.verified
                       else f" (stored untested, NOT verified: {tested.detail})")  # fmt: skip
            kind = "node.power" if tested is None or tested.verified else "node.power_untested"
            events.add(conn, kind,
                       f"node {name}: power driver {power.driver or 'removed'}{where}{how}",
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
