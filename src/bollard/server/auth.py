"""Tokens: the admin token for the API, a per-node token for each agent.

Only SHA-256 hashes are stored; tokens are shown once (admin: in a 0600 file)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from pathlib import Path

from bollard.server.clock import Clock
from bollard.store import settings
from bollard.store.db import Database

log = logging.getLogger(__name__)

ADMIN_TOKEN_KEY = "auth.admin_token_sha256"
ADMIN_TOKEN_FILE = "admin.token"


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
    """Return the admin token's hash, generating the token at first start."""
    path = data_dir / ADMIN_TOKEN_FILE
    with db.write() as conn:
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
