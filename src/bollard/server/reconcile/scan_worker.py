"""The state reconciler's worker process: runs scans (facts.py) for the server that started it.

Started by `ProcessScanner` as ``python -m bollard.server.reconcile.scan_worker``. It talks
over its standard input and output in frames (an 8-byte big-endian length, then a pickle):
the first frame it reads is its configuration (the database URL, which may hold a password
and so is never in the process's arguments); then each frame is a `ScanRequest`, answered by
``("ok", ScanResult)`` or ``("error", text)``. It ends when its input ends (the server closed
it or died), and, on Linux, when the server dies while it scans (parent-death signal).
Its logs go to the standard error it shares with the server.
"""

from __future__ import annotations

import ctypes
import logging
import os
import pickle
import signal
import struct
import sys
import traceback
from typing import IO, Any

from bollard.server.reconcile.facts import ScanRequest, scan
from bollard.store.db import Database

log = logging.getLogger("bollard.scan_worker")

HEADER = struct.Struct(">Q")
# Scans are background work: the kernel gives the server (heartbeats, the API) the CPU first.
NICENESS = 10
PR_SET_PDEATHSIG = 1


def encode_frame(value: Any) -> bytes:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(data)) + data


def write_frame(out: IO[bytes], value: Any) -> None:
    out.write(encode_frame(value))
    out.flush()


def read_frame(source: IO[bytes]) -> Any | None:
    """The next frame's value, or None at the end of the input."""
    header = source.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    (size,) = HEADER.unpack(header)
    data = source.read(size)
    if len(data) < size:
        return None
    return pickle.loads(data)  # frames come only from the server that started us


def _die_with_parent(parent: int) -> None:
    """Ask Linux to kill us when the server dies (a scan in progress would not read its
    input's end until it is over); elsewhere the input's end is the only signal."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        log.warning("scan worker: prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    if os.getppid() != parent:  # the server died before the signal was asked for
        os._exit(0)


def serve(source: IO[bytes], out: IO[bytes]) -> None:
    config = read_frame(source)
    if config is None:
        return
    _die_with_parent(int(config["parent"]))
    os.nice(NICENESS)
    db = Database(str(config["db_url"]))
    try:
        while (request := read_frame(source)) is not None:
            if not isinstance(request, ScanRequest):
                write_frame(out, ("error", f"not a scan request: {type(request).__name__}"))
                continue
            try:
                result = scan(db, request)
            except Exception:  # noqa: BLE001 - reported to the server, which logs it
                write_frame(out, ("error", traceback.format_exc()))
            else:
                write_frame(out, ("ok", result))
    finally:
        db.dispose()


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server's Ctrl-C is the server's to handle
    # Frames go to a copy of our standard output; anything else printed lands on stderr.
    frames = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    serve(sys.stdin.buffer, frames)


if __name__ == "__main__":
    main()
