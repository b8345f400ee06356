"""``make_driver``: a power driver from its configuration (kind, address, credentials)."""

from __future__ import annotations

from pathlib import Path

from bollard.power.base import Credentials, PowerDriver
from bollard.power.errors import PowerConfigError

KINDS = ("sim", "ipmi", "redfish")


def make_driver(
    kind: str,
    address: str,
    credentials: Credentials | None,
    *,
    fabric_dir: Path | None = None,
    system: str | None = None,
    verify_tls: bool = True,
) -> PowerDriver:
    """The power driver of one host. PowerConfigError for a bad configuration.

    - ``sim``: ``address`` is the sim node name; needs ``fabric_dir``; no credentials.
    - ``ipmi``: ``address`` is ``host[:port]`` (623); needs credentials.
    - ``redfish``: ``address`` is the base URL, optionally with ``/redfish/v1/Systems/<id>``
      (or pass ``system``); needs credentials; ``verify_tls=False`` skips TLS certificate
      checks (only when asked for explicitly).
    """
    if not address or not address.strip():
        raise PowerConfigError("a power address is required")
    if kind == "sim":
        if fabric_dir is None:
            raise PowerConfigError("the sim power driver needs the sim fabric directory")
        from bollard.power.sim import SimPowerDriver

        return SimPowerDriver(fabric_dir, address.strip())
    if kind == "ipmi":
        from bollard.power.ipmi import IpmiPowerDriver

        return IpmiPowerDriver(address, credentials)
    if kind == "redfish":
        from bollard.power.redfish import RedfishPowerDriver

        return RedfishPowerDriver(address, credentials, system=system, verify_tls=verify_tls)
    raise PowerConfigError(f"unknown power driver {kind!r}; available: {', '.join(KINDS)}")
