"""Typed errors. Each has a stable code; `retryable` separates "try later" from "bad input"."""

from __future__ import annotations


class BollardError(Exception):
    code = "internal"
    http_status = 500
    retryable = False

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class NotFound(BollardError):
    code = "not-found"
    http_status = 404


class AlreadyExists(BollardError):
    code = "already-exists"
    http_status = 409


class Conflict(BollardError):
    """The request is valid but the target's current state does not allow it."""

    code = "conflict"
    http_status = 409


class InvalidState(Conflict):
    code = "invalid-state"


class InsufficientCapacity(BollardError):
    code = "insufficient-capacity"
    http_status = 409


class InvalidInput(BollardError):
    code = "invalid-input"
    http_status = 422


class Unauthorized(BollardError):
    code = "unauthorized"
    http_status = 401


class NodeUnavailable(BollardError):
    """The node asked for is not connected (or did not answer): a refusal of this request,
    which may succeed later, not a failure of the server."""

    code = "node-unavailable"
    http_status = 409
    retryable = True


class TemporaryError(BollardError):
    """The server itself cannot do it now (e.g. no free MAC address): try again later."""

    code = "temporary"
    http_status = 503
    retryable = True


class CommandFailed(BollardError):
    """A command reached an agent and the agent reported a failure."""

    code = "command-failed"
    http_status = 502


class CommandFailedTemporarily(CommandFailed):
    """The agent reported a failure it calls temporary (code `temporary`: e.g. its server was
    away during an upload): worth sending again later."""

    retryable = True


class CommandTimedOut(BollardError):
    code = "command-timed-out"
    http_status = 504
    retryable = True


class CommandOutcomeUnknown(CommandTimedOut):
    """No one knows yet whether the command took effect (no answer, reconciliation pending
    or given up). Callers that must know ask the hosts (e.g. Inspect) before deciding."""

    code = "command-outcome-unknown"


class StepFailed(BollardError):
    """A task step failed cleanly (its prerequisites were not met, or its action failed)."""

    code = "step-failed"
    http_status = 409


class SchemaTooNew(BollardError):
    code = "schema-too-new"


class SchemaContractRefused(BollardError):
    """A schema's contract steps asked for while servers that need the old schema run."""

    code = "schema-contract-refused"


# Errors that hypervisor drivers raise; the agent turns them into answer error codes.
class DriverError(BollardError):
    code = "driver-error"


class DriverNotFound(DriverError):
    code = "not-found"


class DriverInvalidState(DriverError):
    code = "invalid-state"


class DriverTemporary(DriverError):
    code = "temporary"
    retryable = True


class DriverPermanent(DriverError):
    code = "permanent"
