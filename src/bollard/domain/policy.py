"""Who may do what: roles, the policy table (action -> the roles allowed), users, API tokens
and the identity an API call acts as.

Every API call is mapped to one action (server/api/authn.py holds the route table) and is
allowed when the caller's role is in the action's row below. Later features add their
actions here. Roles are ordered: `reader` < `operator` < `admin`, and each row allows a role
and every role above it, so a token with a narrower role than its user's never gets more.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from bollard.domain.errors import BollardError


class Role(StrEnum):
    READER = "reader"  # every read (GET), nothing else
    OPERATOR = "operator"  # VM and node operations; no users, settings, or others' tokens
    ADMIN = "admin"  # everything

    @property
    def rank(self) -> int:
        return _RANK[self]

    def covers(self, other: Role) -> bool:
        """Whether this role may do everything `other` may (it is `other` or above it)."""
        return self.rank >= other.rank


_RANK = {Role.READER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}
ROLES = (Role.READER, Role.OPERATOR, Role.ADMIN)  # lowest first


def _from(lowest: Role) -> frozenset[Role]:
    return frozenset(r for r in ROLES if r.covers(lowest))


READ = "read"

# action -> the roles allowed. Keep the names `<noun>.<verb>`; the README shows this table.
POLICY: dict[str, frozenset[Role]] = {
    READ: _from(Role.READER),  # every GET but a VM's console
    "vm.create": _from(Role.OPERATOR),
    "vm.power": _from(Role.OPERATOR),  # start, stop, shutdown, restart
    "vm.update": _from(Role.OPERATOR),  # HA, autostart, placement limits
    "vm.delete": _from(Role.OPERATOR),
    "vm.migrate": _from(Role.OPERATOR),  # migrate, move, unmigrate
    "vm.resize": _from(Role.OPERATOR),  # resize, confirm and revert a resize
    "vm.console": _from(Role.OPERATOR),  # the console log and the display's address
    "task.cancel": _from(Role.OPERATOR),
    "node.enroll": _from(Role.OPERATOR),
    "node.power": _from(Role.OPERATOR),  # power driver settings and actions
    "node.confirm_down": _from(Role.OPERATOR),
    "node.flush": _from(Role.OPERATOR),  # flush and unflush
    "node.delete": _from(Role.OPERATOR),
    "node.token": _from(Role.OPERATOR),  # rotate a node's agent token
    "node.update": _from(Role.OPERATOR),  # a node's own settings: its shutdown policy
    # an SR-IOV VF's settings: its trust, spoof check and MAC decide what a guest may do on
    # the physical network, as a host's network configuration does
    "node.sriov": _from(Role.ADMIN),
    "cluster.maintenance": _from(Role.OPERATOR),
    "ha.manage": _from(Role.OPERATOR),  # HA groups and affinity rules: every change
    "pool.manage": _from(Role.ADMIN),  # create, change and delete storage pools
    "flavor.manage": _from(Role.ADMIN),  # create, change and delete flavors
    "cell.manage": _from(Role.ADMIN),  # add, change and remove cells (API server only)
    # a cell's image spool, and VMs exported to it or made from it (moves between cells)
    "image.manage": _from(Role.ADMIN),
    # what an API server asks of its cells for a VM moving between them: import a hidden
    # copy, hide, show (its calls act as the cell's admin)
    "cell.member": _from(Role.ADMIN),
    "volume.manage": _from(Role.OPERATOR),  # volumes and snapshots: every change
    "reconcile.fix": _from(Role.OPERATOR),
    "settings.write": _from(Role.ADMIN),
    "user.manage": _from(Role.ADMIN),  # create and delete users
    "token.own": _from(Role.OPERATOR),  # create and revoke one's own API tokens
    "token.manage": _from(Role.ADMIN),  # list, create and revoke any user's tokens
}


def roles_for(action: str) -> frozenset[Role]:
    """The roles allowed to do `action` (KeyError: no such action)."""
    return POLICY[action]


def allowed(role: Role, action: str) -> bool:
    return role in POLICY[action]


def describe_roles(action: str) -> str:
    """ "operator or admin" """
    names = [r.value for r in ROLES if r in POLICY[action]]
    return " or ".join(names) if names else "no role"


class Forbidden(BollardError):
    """The caller is known but its role does not allow the call."""

    code = "forbidden"
    http_status = 403


BUILTIN_ADMIN = "admin"  # the user the admin token of the first start acts as; never deleted
RESERVED_NAMES = frozenset({"system"})  # actors.SYSTEM: the server's own decisions


@dataclass(frozen=True)
class Identity:
    """Whom an API call acts as: the actor its events and tasks name, the user, the role it
    has (a token's role, if narrower than its user's) and the token (None: the admin token
    of the first start, kept in `<data-dir>/admin.token`)."""

    actor: str
    user: str
    role: Role
    token_id: str | None = None

    def describe(self) -> str:
        if self.token_id is None:
            return f"the admin token of user {self.user!r}"
        return f"token {self.token_id!r} of user {self.user!r}"

    def require(self, action: str, what: str) -> None:
        """Raise Forbidden (naming the permission, the roles it needs and the caller's role)
        unless this identity may do `action`; `what` says what was asked ("POST /api/v1/vms")."""
        if not allowed(self.role, action):
            raise Forbidden(refusal(self, action, what))


def refusal(identity: Identity, action: str, what: str) -> str:
    return (
        f"{what} needs permission {action} (role {describe_roles(action)}); "
        f"{identity.describe()} has role {identity.role.value}"
    )


ADMIN_TOKEN_IDENTITY = Identity(actor=BUILTIN_ADMIN, user=BUILTIN_ADMIN, role=Role.ADMIN)


@dataclass(frozen=True)
class User:
    name: str
    role: Role
    created_at: datetime
    created_by: str | None

    @property
    def builtin(self) -> bool:
        return self.name == BUILTIN_ADMIN


class TokenState(StrEnum):
    ACTIVE = "active"
    EXPIRED = "expired"
    REVOKED = "revoked"


@dataclass(frozen=True)
class ApiToken:
    """An API token as stored: never the token itself, only (elsewhere) its hash."""

    id: str
    user: str
    user_role: Role
    role: Role | None  # narrower than the user's; None: the user's
    description: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    @property
    def effective_role(self) -> Role:
        """The token's role, never above its user's."""
        if self.role is None or self.role.rank > self.user_role.rank:
            return self.user_role
        return self.role

    def state(self, now: datetime) -> TokenState:
        if self.revoked_at is not None:
            return TokenState.REVOKED
        if self.expires_at is not None and self.expires_at <= now:
            return TokenState.EXPIRED
        return TokenState.ACTIVE

    def identity(self) -> Identity:
        # Events and tasks name the user: `bollard events --actor alice` finds what any of
        # alice's tokens did (the access log and refusals name the token).
        return Identity(actor=self.user, user=self.user, role=self.effective_role, token_id=self.id)
