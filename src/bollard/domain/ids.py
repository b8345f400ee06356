"""Identifiers. Task and command ids sort by creation time (like UUIDv7), so lists page in
order and an id is never reused."""

from __future__ import annotations

import secrets
import time
import uuid


def new_id() -> str:
    millis = time.time_ns() // 1_000_000
    raw = f"{millis:012x}{secrets.token_hex(10)}"
    return f"{raw[:8]}-{raw[8:12]}-{raw[12:16]}-{raw[16:20]}-{raw[20:32]}"


def new_uuid() -> str:
    return str(uuid.uuid4())
