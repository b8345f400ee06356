"""Power drivers (fencing): switch a host off and on through its BMC, or the sim fabric.

One interface (``PowerDriver``: status, power_off, power_on, test, each with an enforced
timeout), typed errors (``bollard.power.errors``), and ``make_driver`` for the kinds
``sim``, ``ipmi`` (pyghmi) and ``redfish`` (httpx). Nothing here imports the server or the
agent.
"""

from bollard.power.base import Credentials, PowerDriver, PowerStatus, normalize_status
from bollard.power.errors import (
    PowerAuthError,
    PowerConfigError,
    PowerError,
    PowerTimeout,
    PowerUnreachable,
)
from bollard.power.factory import KINDS, make_driver

__all__ = [
    "KINDS",
    "Credentials",
    "PowerAuthError",
    "PowerConfigError",
    "PowerDriver",
    "PowerError",
    "PowerStatus",
    "PowerTimeout",
    "PowerUnreachable",
    "make_driver",
    "normalize_status",
]
