"""The ``ipmi`` power driver: IPMI 2.0 (RMCP+) over the network, with pyghmi.

Address: ``host`` or ``host:port`` (``[v6addr]:port``), port 623 by default. pyghmi is a
synchronous library: every call runs in a thread of its own with the call's timeout enforced
(see bollard.power.threads), opens a session, does its work and logs out. Calls to one BMC
are serialised (BMCs handle few sessions). The password goes to pyghmi in memory: never on
a command line, never in a log or an error message.

Power off is a chassis control "power down" (hard off); the call returns once the BMC
reports off, polling it within the timeout.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from bollard.power.base import Credentials, PowerStatus, check_timeout, normalize_status
from bollard.power.errors import (
    PowerAuthError,
    PowerConfigError,
    PowerError,
    PowerTimeout,
    PowerUnreachable,
)
from bollard.power.threads import run_blocking

T = TypeVar("T")

log = logging.getLogger(__name__)

DEFAULT_PORT = 623

# Phrases of pyghmi's errors (and the BMC's completion codes it relays) that mean the
# credentials were refused, or that the BMC did not answer.
_AUTH_WORDS = (
    "password",
    "unauthorized",
    "privilege",
    "authentication",
    "invalid role",
    "username",
    "rakp",
)
_UNREACHABLE_WORDS = ("timeout", "timed out", "no longer connected", "unreachable", "refused")


class IpmiSession(Protocol):
    """One logged-in IPMI session (blocking calls)."""

    def power(self) -> str: ...

    def set_power(self, state: str) -> None: ...

    def describe(self) -> str: ...

    def close(self) -> None: ...


Connect = Callable[[str, int, Credentials], IpmiSession]


class _PyghmiSession:
    def __init__(self, host: str, port: int, credentials: Credentials) -> None:
        from pyghmi.ipmi.command import Command  # type: ignore[import-untyped]

        # Bytes, not str: pyghmi keys its table of sessions being set up by the values as
        # given but removes entries by their encoded form, so with str a logged-out session
        # stays in the table and the next login to the BMC reuses it, broken.
        self._cmd: Any = Command(
            bmc=host,
            userid=credentials.username.encode(),
            password=credentials.password.encode(),
            port=port,
            keepalive=False,
        )

    def power(self) -> str:
        return str(self._cmd.get_power()["powerstate"])

    def set_power(self, state: str) -> None:
        self._cmd.set_power(state, wait=False)

    def describe(self) -> str:
        rsp = self._cmd.xraw_command(netfn=0x06, command=0x01)  # Get Device ID
        data = bytes(rsp["data"])
        if len(data) < 11:
            return "IPMI BMC"
        firmware = f"{data[2] & 0x7F}.{data[3]:02x}"
        manufacturer = int.from_bytes(data[6:9], "little")
        product = int.from_bytes(data[9:11], "little")
        return f"IPMI BMC (manufacturer {manufacturer}, product {product}, firmware {firmware})"

    def close(self) -> None:
        self._cmd.ipmi_session.logout()


def _pyghmi_connect(host: str, port: int, credentials: Credentials) -> IpmiSession:
    return _PyghmiSession(host, port, credentials)


def parse_address(address: str) -> tuple[str, int]:
    """``host``, ``host:port`` or ``[v6]:port`` as (host, port)."""
    text = address.strip()
    host, port = text, DEFAULT_PORT
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise PowerConfigError(f"bad IPMI address {address!r}")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise PowerConfigError(f"bad IPMI address {address!r}")
            port = _port(rest[1:], address)
    elif text.count(":") == 1:
        host, raw_port = text.split(":")
        port = _port(raw_port, address)
    if not host or any(c.isspace() or c == "/" for c in host):
        raise PowerConfigError(f"bad IPMI address {address!r}: expected host[:port]")
    return host, port


def _port(raw: str, address: str) -> int:
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise PowerConfigError(f"bad port in IPMI address {address!r}")
    return int(raw)


# One lock per BMC, shared by every driver instance in the process.
_locks: dict[tuple[str, int], threading.Lock] = {}
_locks_guard = threading.Lock()


def _bmc_lock(host: str, port: int) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault((host, port), threading.Lock())


def _map_error(exc: BaseException, where: str) -> PowerError:
    if isinstance(exc, PowerError):
        if exc.message.startswith(where):
            return exc
        return type(exc)(f"{where}: {exc.message}")
    if isinstance(exc, socket.gaierror):
        return PowerUnreachable(f"{where}: cannot resolve the BMC's name ({exc.strerror})")
    if isinstance(exc, OSError):
        return PowerUnreachable(f"{where}: {exc.strerror or exc}")
    detail = exc.args[0] if exc.args else None
    if detail is None:  # pyghmi's way of saying that the BMC never answered
        return PowerUnreachable(f"{where}: no answer from the BMC")
    text = str(detail)
    lowered = text.casefold()
    if any(word in lowered for word in _AUTH_WORDS):
        return PowerAuthError(f"{where}: the BMC refused the credentials ({text})")
    if any(word in lowered for word in _UNREACHABLE_WORDS):
        return PowerUnreachable(f"{where}: {text}")
    return PowerError(f"{where}: {text}")


class IpmiPowerDriver:
    name = "ipmi"

    def __init__(
        self, address: str, credentials: Credentials | None, *, connect: Connect | None = None
    ) -> None:
        if credentials is None:
            raise PowerConfigError("the ipmi power driver needs credentials")
        self.host, self.port = parse_address(address)
        self._credentials = credentials
        self._connect = connect or _pyghmi_connect

    def __repr__(self) -> str:
        return f"IpmiPowerDriver({self.where!r}, user={self._credentials.username!r})"

    @property
    def where(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    async def _call(self, what: str, timeout: float, fn: Callable[[IpmiSession, float], T]) -> T:
        """Run ``fn(session, deadline)`` in a session, in a thread, within ``timeout``."""
        timeout = check_timeout(timeout)
        # The work in the thread gives up a little before the caller's deadline, so that its
        # own error (which says what the BMC last reported) is the one returned, not the
        # bare "did not complete" of the outer deadline racing it.
        deadline = time.monotonic() + timeout - min(0.2, timeout * 0.2)
        where = f"IPMI {what} on {self.where}"

        def blocking() -> T:
            lock = _bmc_lock(self.host, self.port)
            if not lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
                raise PowerTimeout(f"{where}: another call to this BMC is still running")
            try:
                session = self._connect(self.host, self.port, self._credentials)
                try:
                    return fn(session, deadline)
                finally:
                    _close(session)
            except Exception as exc:  # noqa: BLE001 - every failure becomes a PowerError
                raise _map_error(exc, where) from None
            finally:
                lock.release()

        return await run_blocking(blocking, timeout, where)

    async def status(self, timeout: float) -> PowerStatus:
        return await self._call("status", timeout, lambda s, _d: normalize_status(s.power()))

    async def power_off(self, timeout: float) -> None:
        await self._call("power off", timeout, lambda s, d: _switch(s, PowerStatus.OFF, d))

    async def power_on(self, timeout: float) -> None:
        await self._call("power on", timeout, lambda s, d: _switch(s, PowerStatus.ON, d))

    async def test(self, timeout: float) -> str:
        def probe(session: IpmiSession, _deadline: float) -> str:
            power = normalize_status(session.power())
            return f"{session.describe()} at {self.where}: power {power.value}"

        return await self._call("test", timeout, probe)


def _close(session: IpmiSession) -> None:
    try:
        session.close()
    except Exception as exc:  # noqa: BLE001 - a failed logout must not hide the result
        log.debug("IPMI logout failed (the BMC expires the session): %s", exc)


def _switch(session: IpmiSession, want: PowerStatus, deadline: float) -> None:
    """Ask for ``want`` unless already there, then poll until the BMC reports it."""
    if normalize_status(session.power()) == want:
        return
    session.set_power("off" if want == PowerStatus.OFF else "on")
    delay = 0.05
    last = None
    while time.monotonic() < deadline:
        last = normalize_status(session.power())
        if last == want:
            return
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))  # backoff between polls
        delay = min(delay * 2, 1.0)
    seen = f"; it still reports {last.value}" if last is not None else ""
    raise PowerTimeout(f"the BMC did not report {want.value} in time{seen}")
