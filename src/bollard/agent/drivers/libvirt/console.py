"""Reading the tail of a VM's serial console log.

QEMU appends whatever the guest writes to its serial port to the log file; it can hold any
bytes (escape sequences, binary noise, a partial UTF-8 sequence where the last write was
cut). The tail is read from the end of the file in blocks, at most ``MAX_BYTES``, and
decoded with undecodable bytes replaced.
"""

from __future__ import annotations

import os
from pathlib import Path

MAX_BYTES = 1 << 20  # read at most this much of the log's end
_BLOCK = 64 * 1024


def tail(path: Path, lines: int, *, max_bytes: int = MAX_BYTES) -> str:
    """The last ``lines`` lines of the file ("" when it does not exist yet)."""
    if lines <= 0:
        return ""
    try:
        with path.open("rb") as f:
            data = _tail_bytes(f.fileno(), lines, max_bytes)
    except FileNotFoundError:
        return ""
    return data.decode("utf-8", errors="replace")


def _tail_bytes(fd: int, lines: int, max_bytes: int) -> bytes:
    end = os.fstat(fd).st_size
    chunks: list[bytes] = []
    newlines = 0
    pos = end
    # One newline more than lines is needed when the file ends with one.
    while pos > 0 and end - pos < max_bytes and newlines <= lines:
        size = min(_BLOCK, pos, max_bytes - (end - pos))
        pos -= size
        chunk = os.pread(fd, size, pos)
        chunks.append(chunk)
        newlines += chunk.count(b"\n")
    data = b"".join(reversed(chunks))
    ends_with_newline = data.endswith(b"\n")
    parts = data.split(b"\n")
    if ends_with_newline:
        parts.pop()
    return b"\n".join(parts[-lines:]) + (b"\n" if ends_with_newline else b"")
