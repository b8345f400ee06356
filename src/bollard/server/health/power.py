"""Building a node's power (fencing) driver from its record; credentials stay encrypted."""

from __future__ import annotations

from pathlib import Path

from bollard.domain.errors import InvalidState
from bollard.power import Credentials, PowerDriver, make_driver
from bollard.server.ports import UnitOfWork
from bollard.server.secrets import SecretBox
from bollard.store import nodes


class PowerDriverFactory:
    """A `ports.PowerDrivers`."""

    def __init__(
        self, *, work: UnitOfWork, secrets: SecretBox, sim_fabric_dir: Path | None
    ) -> None:
        self.work = work
        self.secrets = secrets
        self.sim_fabric_dir = sim_fabric_dir

    def driver_for(self, node: str) -> PowerDriver:
        """The node's power driver (blocking: call through `UnitOfWork.run`)."""
        with self.work.read() as conn:
            record = nodes.get(conn, node)
            sealed = nodes.power_secret(conn, node)
        if not record.power_driver or not record.power_address:
            raise InvalidState(
                f"node {node} has no power driver: `bollard node set {node} --power-driver ... "
                "--power-address ...`"
            )
        credentials = None
        if sealed is not None:
            values = self.secrets.open(sealed)
            credentials = Credentials(values.get("username", ""), values.get("password", ""))
        return make_driver(
            record.power_driver,
            record.power_address,
            credentials,
            fabric_dir=self.sim_fabric_dir,
        )

    def candidate(
        self,
        node: str,
        driver: str,
        address: str,
        username: str | None,
        password: str | None,
    ) -> PowerDriver:
        """A driver from settings not stored yet, to test them first (blocking)."""
        credentials = None
        if username is not None or password is not None:
            credentials = Credentials(username or "", password or "")
        else:
            with self.work.read() as conn:
                sealed = nodes.power_secret(conn, node)  # None for a node not enrolled yet
            if sealed is not None:
                values = self.secrets.open(sealed)
                credentials = Credentials(values.get("username", ""), values.get("password", ""))
        return make_driver(driver, address, credentials, fabric_dir=self.sim_fabric_dir)
