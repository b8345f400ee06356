"""Errors of power drivers (fencing). All are PowerError, a BollardError with a stable code.

``retryable`` says whether trying again later may help: a timeout or an unreachable BMC may
answer next time; wrong credentials or a bad configuration will not.
"""

from __future__ import annotations

from bollard.domain.errors import BollardError


class PowerError(BollardError):
    """A power operation failed (also the base of every other power error)."""

    code = "power-error"
    http_status = 502


class PowerTimeout(PowerError):
    """The operation did not complete within its timeout; its effect is unknown."""

    code = "power-timeout"
    http_status = 504
    retryable = True


class PowerAuthError(PowerError):
    """The BMC refused the credentials (wrong user or password, insufficient privilege)."""

    code = "power-auth"


class PowerUnreachable(PowerError):
    """The BMC (or the sim host) could not be reached at its address."""

    code = "power-unreachable"
    http_status = 503
    retryable = True


class PowerConfigError(PowerError):
    """The driver's configuration is invalid (unknown kind, bad address, no credentials)."""

    code = "power-config"
    http_status = 422
