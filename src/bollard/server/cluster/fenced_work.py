"""The database as the leader's duties use it: every write transaction first checks, in the
same transaction, that this server still holds the leader lease with its fencing token.

On PostgreSQL the check locks the lease row `FOR SHARE` until the transaction ends, so a peer
taking the lease over waits for a running checked transaction, and a transaction the deposed
leader begins afterwards finds the new holder and is refused (`NotLeader`, rolled back). Such a
transaction idle for half the lease's ttl is ended by PostgreSQL (`bound_lease_transaction`):
a leader cut from the database mid-transaction does not keep its peers from the lease.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import ParamSpec, TypeVar

from sqlalchemy import Connection

from bollard.domain.errors import BollardError
from bollard.server.cluster.leader import Leadership
from bollard.server.cluster.membership import bound_lease_transaction
from bollard.server.ports import UnitOfWork
from bollard.store import leases

P = ParamSpec("P")
R = TypeVar("R")


class NotLeader(BollardError):
    """This server is not the leader (or no longer is): the leader's write was refused."""

    code = "not-leader"
    http_status = 409
    retryable = False


class LeaderWork:
    """A `ports.UnitOfWork` whose write transactions are fenced by the leader lease; reads
    and `run` are the inner work's."""

    def __init__(self, work: UnitOfWork, leadership: Leadership) -> None:
        self.work = work
        self.leadership = leadership

    def read(self) -> AbstractContextManager[Connection]:
        return self.work.read()

    def write(self) -> AbstractContextManager[Connection]:
        return self._fenced()

    async def run(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        return await self.work.run(fn, *args, **kwargs)

    @contextmanager
    def _fenced(self) -> Iterator[Connection]:
        lead = self.leadership
        token = lead.token
        if token is None:
            raise NotLeader(f"server {lead.holder} is not the {lead.name}")
        with self.work.write() as conn:
            bound_lease_transaction(conn, lead.ttl)
            if not leases.check(conn, lead.name, lead.holder, token):
                raise NotLeader(
                    f"server {lead.holder} no longer holds the {lead.name} lease with token {token}"
                )
            yield conn
