"""Running qemu-img (and sh, rm, sha256sum) on the daemon's volume files.

libvirt's storage API has no internal snapshots of a volume, no digest of its content and
no copy that reports progress or can be stopped: the driver runs ``qemu-img`` on the
volumes' paths for those. The agent runs on the daemon's machine and sees its files at the
paths the daemon uses. Where the daemon runs in a mount namespace of its own (the test
daemons do: each sees its own /var/lib/libvirt), ``prefix`` enters it first (e.g.
``["nsenter", "--mount=/proc/<pid>/ns/mnt", "--"]``).

Every tool runs with ``setpriv --pdeathsig KILL`` (where setpriv exists), so that it dies
with the thread that started it (an agent that dies takes its copies along). Tools called
from async code run as asyncio subprocesses within a deadline; copies (in job threads) use
``start`` and read the process's progress themselves.

What qemu-img says when another process (a running VM) has the image open ("Failed to get
... lock") becomes DriverInvalidState: the volume is in use.

``copy_cache_mode``: how a copy writes its target. ``qemu-img convert`` writes with
``cache=unsafe`` unless told otherwise: nothing is flushed, so a copy that "ended" may still
be in the page cache when its task removes the source, and a power cut then loses both. A
copy writes with ``-t none`` (O_DIRECT, flushed at the end; it does not flood the host's page
cache with dirty data that guests' I/O then waits behind, as OpenStack Nova does for its
image conversions) where the target's file system can (probed once per directory: a 4 KiB
O_DIRECT write of a hidden file, removed at once), else with ``-t writeback`` (flushed at the
end).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import subprocess
from collections.abc import Sequence
from typing import Any

from bollard.domain.errors import DriverInvalidState, DriverPermanent, DriverTemporary

DEFAULT_TIMEOUT = 600.0  # seconds a tool call may take (a checksum reads the whole volume)
PROBE_TIMEOUT = 30.0  # seconds the O_DIRECT probe of a directory may take
_PROGRESS = re.compile(rb"\((\d+(?:\.\d+)?)/100%\)")
_LOCKED = ("failed to get", "lock")
DIRECT_PROBE = ".bollard-direct-io-probe"  # in the directory probed (hidden: not a volume)
# $1 the directory: can a file there be written with O_DIRECT? (exit status 0: yes)
_PROBE_DIRECT = (
    'f="$1/' + DIRECT_PROBE + '"\n'
    'dd if=/dev/zero of="$f" bs=4096 count=1 oflag=direct 2>/dev/null; s=$?\n'
    'rm -f -- "$f"\n'
    "exit $s\n"
)

# The checksum: the guest-visible bytes written out as a raw file (sparse: holes cost
# nothing) in the volume's own directory (the room is there), hashed, then removed.
_CHECKSUM = (
    "set -e\n"
    't=$(mktemp -p "$3" .bollard-checksum-XXXXXXXX)\n'
    "trap 'rm -f \"$t\"' EXIT\n"
    'qemu-img convert -U -f "$1" -O raw "$2" "$t"\n'
    'sha256sum < "$t"\n'
)


class ToolError(Exception):
    """A tool ended with an error; ``stderr`` is what it said."""

    def __init__(self, action: str, code: int, stderr: str) -> None:
        self.action, self.code, self.stderr = action, code, stderr
        super().__init__(f"{action}: {last_line(stderr) or f'exit status {code}'}")


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def in_use(stderr: str) -> bool:
    lowered = stderr.lower()
    return all(word in lowered for word in _LOCKED)


def tool_error(action: str, code: int, stderr: str) -> DriverInvalidState | DriverPermanent:
    """The Driver* error of a tool that failed while doing ``action``."""
    if in_use(stderr):
        return DriverInvalidState(f"{action}: the volume is in use (a running VM has it open)")
    said = " ".join(stderr.split()) or f"exit status {code}"
    return DriverPermanent(f"{action}: {said}")


def progress_of(output: bytes) -> float | None:
    """The last fraction ``qemu-img convert -p`` printed in ``output`` (None: none yet)."""
    found = _PROGRESS.findall(output)
    return min(1.0, float(found[-1]) / 100.0) if found else None


class HostTools:
    def __init__(self, prefix: Sequence[str] = (), timeout: float = DEFAULT_TIMEOUT) -> None:
        if timeout <= 0:
            raise ValueError("the tool timeout must be > 0")
        guard = ["setpriv", "--pdeathsig", "KILL", "--"] if shutil.which("setpriv") else []
        self.prefix = [*guard, *prefix]
        self.timeout = timeout
        self._cache_modes: dict[str, str] = {}  # directory → the copies' cache mode there

    def copy_cache_mode(self, directory: str) -> str:
        """``none`` where files of ``directory`` can be written with O_DIRECT, else
        ``writeback`` (see the module's docstring); blocking, probed once per directory."""
        mode = self._cache_modes.get(directory)
        if mode is None:
            try:
                done = subprocess.run(
                    self.command(["sh", "-c", _PROBE_DIRECT, "sh", directory]),
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    timeout=PROBE_TIMEOUT,
                )
                mode = "none" if done.returncode == 0 else "writeback"
            except (OSError, subprocess.TimeoutExpired):
                mode = "writeback"
            self._cache_modes[directory] = mode
        return mode

    def command(self, argv: Sequence[str]) -> list[str]:
        return [*self.prefix, *argv]

    async def run(self, action: str, argv: Sequence[str], timeout: float | None = None) -> str:
        """Run ``argv``; its standard output. DriverTemporary past the deadline (the tool is
        killed), DriverInvalidState / DriverPermanent when it fails (``tool_error``)."""
        limit = self.timeout if timeout is None else timeout
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.command(argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        except OSError as exc:
            raise DriverPermanent(f"{action}: cannot run {argv[0]}: {exc}") from None
        try:
            async with asyncio.timeout(limit):
                out, err = await proc.communicate()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise DriverTemporary(f"{action}: no answer within {limit:g}s") from None
        if proc.returncode != 0:
            raise tool_error(action, proc.returncode or 0, err.decode(errors="replace"))
        return out.decode(errors="replace")

    def start(self, argv: Sequence[str]) -> subprocess.Popen[bytes]:
        """Start ``argv`` (a job's copy): its output and errors to read as it runs."""
        return subprocess.Popen(
            self.command(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def run_now(self, action: str, argv: Sequence[str], timeout: float | None = None) -> str:
        """``run`` for the job threads (blocking)."""
        limit = self.timeout if timeout is None else timeout
        try:
            done = subprocess.run(
                self.command(argv), stdin=subprocess.DEVNULL, capture_output=True, timeout=limit
            )
        except subprocess.TimeoutExpired:
            raise DriverTemporary(f"{action}: no answer within {limit:g}s") from None
        except OSError as exc:
            raise DriverPermanent(f"{action}: cannot run {argv[0]}: {exc}") from None
        if done.returncode != 0:
            raise tool_error(action, done.returncode, done.stderr.decode(errors="replace"))
        return done.stdout.decode(errors="replace")

    # qemu-img

    async def info(self, path: str, fmt: str, *, shared: bool = True) -> dict[str, Any]:
        """``qemu-img info`` of the image; ``shared=False`` takes the image's lock, so that
        an image a running VM has open is refused (DriverInvalidState)."""
        argv = ["qemu-img", "info", "--output=json", "-f", fmt, *(["-U"] if shared else []), path]
        out = await self.run(f"read {path}", argv)
        try:
            info: dict[str, Any] = json.loads(out)
        except ValueError:
            raise DriverPermanent(f"qemu-img info {path}: unreadable answer") from None
        return info

    async def snapshot(self, op: str, name: str, path: str) -> None:
        """``qemu-img snapshot -c|-d|-a NAME`` (create, delete, apply)."""
        what = {"-c": "take", "-d": "delete", "-a": "revert to"}[op]
        await self.run(
            f"{what} snapshot {name} of {path}", ["qemu-img", "snapshot", op, name, path]
        )

    async def checksum(self, path: str, fmt: str, scratch_dir: str) -> str:
        """The sha256 (hex) of the image's guest-visible bytes (see ``_CHECKSUM``)."""
        out = await self.run(
            f"checksum {path}", ["sh", "-c", _CHECKSUM, "sh", fmt, path, scratch_dir]
        )
        digest = out.split()[0] if out.split() else ""
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise DriverPermanent(f"checksum {path}: unexpected output {out.strip()[:80]!r}")
        return digest
