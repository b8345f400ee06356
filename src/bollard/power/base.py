"""The power driver interface (fencing), credentials, and what every driver shares.

Every call takes a timeout in seconds and never outlives it: it returns, or raises
PowerTimeout, within the timeout (plus scheduling slack). Power states read from a BMC are
normalised (case, spaces, separators) before they are compared: "On", "ON", "on" and
"Powering On" all read as on. Only a definite off reads as off, so a host that is still
powering off reads as on, and a fence waits for it.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, TypeVar, runtime_checkable

from bollard.power.errors import PowerConfigError, PowerError, PowerTimeout

T = TypeVar("T")


class PowerStatus(StrEnum):
    ON = "on"
    OFF = "off"


@dataclass(frozen=True)
class Credentials:
    """A BMC user and password. The password is never shown by repr() or str()."""

    username: str
    password: str = field(repr=False)

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password='***')"

    __str__ = __repr__


@runtime_checkable
class PowerDriver(Protocol):
    """Controls the power of one host, through its BMC (or the sim fabric)."""

    name: str  # the driver kind: sim, ipmi, redfish

    async def status(self, timeout: float) -> PowerStatus:
        """The host's power state, as its BMC reports it now."""
        ...

    async def power_off(self, timeout: float) -> None:
        """Hard power off (no guest shutdown). Returns once the BMC reports off; idempotent."""
        ...

    async def power_on(self, timeout: float) -> None:
        """Power on. Returns once the BMC reports on; idempotent."""
        ...

    async def test(self, timeout: float) -> str:
        """Check the address and credentials without acting; a short description of what
        answered (e.g. the BMC's model and the power state)."""
        ...


_SEPARATORS = re.compile(r"[\s_\-]+")
_ON = frozenset({"on", "poweron", "poweredon", "poweringon"})
_OFF = frozenset({"off", "poweroff", "poweredoff"})
_STILL_ON = frozenset({"poweringoff"})  # not off until it says so


def normalize_status(raw: object) -> PowerStatus:
    """A power state as a BMC spells it ("On", "OFF", "PoweringOn", ...) as a PowerStatus.

    PowerError for anything else (None, "Unknown", ...): an unreadable state is never off.
    """
    if isinstance(raw, bool):
        return PowerStatus.ON if raw else PowerStatus.OFF
    if isinstance(raw, str):
        key = _SEPARATORS.sub("", raw).casefold()
        if key in _ON or key in _STILL_ON:
            return PowerStatus.ON
        if key in _OFF:
            return PowerStatus.OFF
    raise PowerError(f"unrecognised power state {raw!r}")


def check_timeout(timeout: float) -> float:
    if not isinstance(timeout, int | float) or math.isnan(timeout) or timeout <= 0:
        raise PowerConfigError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if math.isinf(timeout):
        raise PowerConfigError("timeout must be finite")
    return float(timeout)


async def bounded(awaitable: Awaitable[T], timeout: float, what: str) -> T:
    """Await ``awaitable`` for at most ``timeout`` seconds; PowerTimeout after that."""
    try:
        timeout = check_timeout(timeout)
    except PowerConfigError:
        if inspect.iscoroutine(awaitable):
            awaitable.close()  # never awaited: say so quietly
        raise
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except TimeoutError:
        raise PowerTimeout(f"{what} did not complete within {timeout:g} s") from None


async def wait_for_status(
    read: Callable[[float], Awaitable[PowerStatus]],
    want: PowerStatus,
    deadline: float,
    what: str,
    *,
    first_delay: float = 0.05,
    max_delay: float = 1.0,
) -> None:
    """Poll ``read(remaining)`` until it returns ``want``, backing off between reads;
    PowerTimeout once the loop clock passes ``deadline`` (an absolute ``loop.time()``)."""
    loop = asyncio.get_running_loop()
    delay = first_delay
    last: PowerStatus | None = None
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        last = await read(remaining)
        if last == want:
            return
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        await asyncio.sleep(min(delay, remaining))  # backoff between polls of the BMC
        delay = min(delay * 2, max_delay)
    seen = f"; it still reports {last.value}" if last is not None else ""
    raise PowerTimeout(f"{what}: the host did not report {want.value} in time{seen}")
