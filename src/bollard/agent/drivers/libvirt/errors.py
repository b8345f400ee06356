"""libvirt errors → Bollard's Driver* errors.

The codes are libvirt's ``virErrorNumber`` and ``virErrorDomain`` values (virterror.h, a
stable ABI), so the mapping works on any object with libvirtError's accessors and can be
tested without libvirt installed.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Protocol

from bollard.agent.drivers.libvirt.lockd import lock_refusal
from bollard.domain.errors import (
    DriverError,
    DriverInvalidState,
    DriverNotFound,
    DriverPermanent,
    DriverTemporary,
)


class Err(IntEnum):
    INTERNAL_ERROR = 1
    NO_SUPPORT = 3
    NO_CONNECT = 5
    INVALID_CONN = 6
    INVALID_ARG = 8
    OPERATION_FAILED = 9
    DOM_EXIST = 28
    SYSTEM_ERROR = 38
    RPC = 39
    NO_DOMAIN = 42
    AUTH_FAILED = 45
    OPERATION_INVALID = 55
    CONFIG_UNSUPPORTED = 67
    OPERATION_TIMEOUT = 68
    OPERATION_ABORTED = 78
    AUTH_CANCELLED = 79
    NO_DOMAIN_METADATA = 80
    ARGUMENT_UNSUPPORTED = 74
    OPERATION_UNSUPPORTED = 84
    AGENT_UNRESPONSIVE = 86
    RESOURCE_BUSY = 87
    ACCESS_DENIED = 88
    AUTH_UNAVAILABLE = 94
    NO_SERVER = 95
    NO_CLIENT = 96


class From(IntEnum):
    RPC = 7
    REMOTE = 13


class LibvirtErrorLike(Protocol):
    def get_error_code(self) -> int | None: ...

    def get_error_domain(self) -> int | None: ...

    def get_error_message(self) -> str | None: ...


NOT_FOUND = frozenset({Err.NO_DOMAIN, Err.NO_DOMAIN_METADATA})
INVALID_STATE = frozenset({Err.OPERATION_INVALID, Err.DOM_EXIST})
# The connection is gone or unusable: reconnect before the next call.
CONNECTION_LOST = frozenset({Err.NO_CONNECT, Err.INVALID_CONN, Err.RPC})
TEMPORARY = CONNECTION_LOST | {
    Err.SYSTEM_ERROR,
    Err.OPERATION_TIMEOUT,  # e.g. "cannot acquire state change lock"
    Err.AGENT_UNRESPONSIVE,
    Err.RESOURCE_BUSY,
    Err.AUTH_UNAVAILABLE,
    Err.NO_SERVER,
    Err.NO_CLIENT,
}
# A call refused because it does not know a flag or argument: try a plainer form.
UNSUPPORTED = frozenset(
    {Err.NO_SUPPORT, Err.INVALID_ARG, Err.ARGUMENT_UNSUPPORTED, Err.OPERATION_UNSUPPORTED}
)

# What libvirt or QEMU say when the host cannot run domains of type kvm: no KVM at all, or
# a KVM that QEMU cannot drive (e.g. a nested or paravirtual one: "kvm.c: ... Assertion
# ... kvm_buf_set_msrs", "KVM internal error").
_NO_KVM = (
    "kvm is not available",
    "could not access kvm kernel module",
    "domaintype=kvm",
    "domain requires kvm",
    "failed to initialize kvm",
    "/dev/kvm",
    "kvm internal error",
    "kvm.c:",
    "kvm_",
)
KVM_HINT = (
    "KVM is not usable on this host; run the agent with --libvirt-domain-type qemu "
    "(software emulation) or make KVM usable here"
)


def code_of(exc: LibvirtErrorLike) -> int:
    return exc.get_error_code() or 0


def message_of(exc: LibvirtErrorLike) -> str:
    return (exc.get_error_message() or str(exc) or "unknown libvirt error").strip()


def is_connection_lost(exc: LibvirtErrorLike) -> bool:
    """Whether the connection to libvirt is broken (reopen it before the next call): a
    connection error, or a system or internal error of the client's transport (e.g. "End
    of file while reading data", "connection closed due to keepalive timeout")."""
    code = code_of(exc)
    if code in CONNECTION_LOST:
        return True
    transport = exc.get_error_domain() in (From.RPC, From.REMOTE)
    if transport and code in (Err.SYSTEM_ERROR, Err.INTERNAL_ERROR):
        return True
    return "connection closed" in message_of(exc).lower()


def is_unsupported(exc: LibvirtErrorLike) -> bool:
    return code_of(exc) in UNSUPPORTED


def no_kvm(message: str) -> bool:
    lowered = message.lower()
    return any(s in lowered for s in _NO_KVM)


def map_error(exc: LibvirtErrorLike, action: str) -> DriverError:
    """The Driver* error for a libvirt error raised while doing ``action``."""
    code = code_of(exc)
    message = message_of(exc)
    text = f"libvirt: {action}: {message}"
    if no_kvm(message):
        return DriverPermanent(f"{text}; {KVM_HINT}")
    refused = lock_refusal(exc, action)  # a disk's lease or image lock is held elsewhere
    if refused is not None:
        return refused
    if code in NOT_FOUND:
        return DriverNotFound(text)
    if code in INVALID_STATE:
        return DriverInvalidState(text)
    if code in TEMPORARY or is_connection_lost(exc):
        return DriverTemporary(text)
    return DriverPermanent(text)
