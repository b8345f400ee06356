"""Building a node's power (fencing) driver from its record; credentials stay encrypted."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bollard.domain.errors import InvalidState
from bollard.power import Credentials, PowerDriver, make_driver
from bollard.store import nodes

if TYPE_CHECKING:
    from bollard.server.runtime import Runtime


def driver_for(rt: Runtime, node: str) -> PowerDriver:
    with rt.db.read() as conn:
        record = nodes.get(conn, node)
        sealed = nodes.power_secret(conn, node)
    if not record.power_driver or not record.power_address:
        raise InvalidState(
            f"node {node} has no power driver: `bollard node set {node} --power-driver ... "
            "--power-address ...`"
        )
    credentials = None
    if sealed is not None:
        values = rt.secrets.open(sealed)
        credentials = Credentials(values.get("username", ""), values.get("password", ""))
    return make_driver(
        record.power_driver,
        record.power_address,
        credentials,
        fabric_dir=rt.config.sim_fabric_dir,
    )
