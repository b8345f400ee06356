"""Tokens the server shows once: into a file only its owner can read, or on the screen."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bollard.durable import write_atomic


def write_secret(path: Path, secret: str) -> None:
    """Write ``secret`` to ``path``, mode 0600 from the first byte on, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, (secret + "\n").encode(), mode=0o600)


def shown_once(answer: dict[str, Any], token_file: Path | None) -> tuple[str, dict[str, Any]]:
    """The token an answer carries, written to ``token_file`` if one is given; and the answer
    as ``-o json`` shows it (without the token when it went to the file)."""
    token = str(answer.get("token") or "")
    if token_file is None:
        return token, answer
    write_secret(token_file, token)
    return token, {**answer, "token": None, "token_file": str(token_file)}
