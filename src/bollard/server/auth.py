"""Tokens: the admin token for the API, API tokens of users, a per-node token for each agent.

Only SHA-256 hashes are stored; tokens are shown once (admin: in a 0600 file). The admin token
of the first start acts as the built-in user `admin`, created with it."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from datetime import timedelta
from pathlib import Path

from bollard.domain.errors import Unauthorized
from bollard.domain.policy import ADMIN_TOKEN_IDENTITY, BUILTIN_ADMIN, Identity, Role
from bollard.server.clock import Clock
from bollard.server.ports import UnitOfWork
from bollard.store import api_tokens, settings, users
from bollard.store.db import Database

log = logging.getLogger(__name__)

ADMIN_TOKEN_KEY = "auth.admin_token_sha256"
ADMIN_TOKEN_FILE = "admin.token"
# A token's last use is written at most this often (not a write per request).
LAST_USED_EVERY = timedelta(minutes=1)


def new_token() -> str:
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def same_hash(token: str, expected_hash: str) -> bool:
    return hmac.compare_digest(hash_token(token), expected_hash)


def write_secret_file(path: Path, content: str) -> None:
    """Create (or replace) a file only its owner can read, without a window where it is open."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, (content + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def bootstrap_admin_token(db: Database, data_dir: Path, clock: Clock) -> str:
    """Return the admin token's hash, generating the token at first start; make sure the
    built-in user `admin` it acts as exists (also in databases made before users were)."""
    path = data_dir / ADMIN_TOKEN_FILE
    with db.write() as conn:
        users.ensure(conn, BUILTIN_ADMIN, Role.ADMIN, clock.now())
        stored = settings.get(conn, ADMIN_TOKEN_KEY)
        if stored is not None:
            if not path.exists():
                log.warning(
                    "the admin token is set in the database but %s is missing; "
                    "it is not written again (only its hash is stored)",
                    path,
                )
            return stored
        token = new_token()
        write_secret_file(path, token)
        digest = hash_token(token)
        settings.put(conn, ADMIN_TOKEN_KEY, digest, clock.now())
    log.info("generated the admin token in %s (mode 0600)", path)
    return digest


class Authenticator:
    """Who a bearer token belongs to: the admin token (a hash comparison, no database read)
    or a user's API token (looked up by its hash, refused if unknown, expired or revoked)."""

    def __init__(self, *, work: UnitOfWork, clock: Clock, admin_token_hash: str) -> None:
        self._work = work
        self._clock = clock
        self._admin_token_hash = admin_token_hash

    async def identify(self, token: str) -> Identity:
        """The identity the token acts as; Unauthorized (one line saying why) if none."""
        if same_hash(token, self._admin_token_hash):
            return ADMIN_TOKEN_IDENTITY
        return await self._work.run(self.lookup, hash_token(token))

    def lookup(self, token_hash: str) -> Identity:
        """Blocking (call through `UnitOfWork.run`)."""
        now = self._clock.now()
        with self._work.read() as conn:
            token = api_tokens.by_hash(conn, token_hash)
        if token is None:
            raise Unauthorized(
                "unknown token: it is neither the admin token nor any user's API token"
            )
        if token.revoked_at is not None:
            raise Unauthorized(
                f"token {token.id} of user {token.user!r} was revoked at "
                f"{token.revoked_at.isoformat(timespec='seconds')}"
            )
        if token.expires_at is not None and token.expires_at <= now:
            raise Unauthorized(
                f"token {token.id} of user {token.user!r} expired at "
                f"{token.expires_at.isoformat(timespec='seconds')}"
            )
        if token.last_used_at is None or now - token.last_used_at >= LAST_USED_EVERY:
            with self._work.write() as conn:
                api_tokens.touch(conn, token.id, now, LAST_USED_EVERY)
        return token.identity()
