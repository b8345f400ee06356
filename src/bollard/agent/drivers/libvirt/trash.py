"""A pool's trash: volumes deleted at once, their blocks freed in the background.

Unlinking a big file frees its blocks before ``unlink(2)`` returns: 0.2-0.9 s for a 1 GiB
volume on ext4 mounted with ``discard`` (measured, bench/storage.py), more for bigger ones.
A migration's last step (removing the source) and every volume delete waited for that. So
the driver deletes a volume in two moves (``LibvirtVolumes.delete_volume``):

1. ``put``: a hard link to the volume's file is made in the pool's hidden trash directory
   (``<pool dir>/.bollard-trash/<file>.<random>.trash``): instant, nothing is copied;
2. libvirt deletes the volume (``virStorageVolDelete``) as before, with its own checks (a
   volume a libvirt stream reads or writes, or one libvirt still builds, is refused). The
   file is gone from the pool when it returns; as the trash still links its data, that
   unlink frees nothing and is instant too;

then ``empty_soon`` unlinks the trash's entries in the background: that is where the
blocks are freed. A hard link rather than a rename keeps libvirt the one that deletes (its
refusals, its list of the pool's volumes), and whatever fails or crashes in between leaves
at worst a trash entry, never a volume without its file.

What holds:

- A deleted volume's file is gone from the pool when the delete returns (its name is free,
  it is listed no more), as before; only the room comes back a moment later.
- The trash is never a volume: its name (and its entries') are hidden, not volume file
  names, so listings leave it out and the storage reconciler never sees it as an orphan.
- The trash is emptied after each delete and the first time this process uses a pool
  (``first_use``: after an agent start, what a crash left is removed). Several hosts may
  empty a shared pool's trash at once: an entry unlinked twice is fine (``rm -f``), and an
  entry whose volume is still in the pool (a delete under way elsewhere) is only a link.
- Where no hard link can be made (a file system without them, the volume's file not where
  libvirt says), the volume is deleted as before, unlinked while the caller waits.

Every file operation runs through ``HostTools`` (in the daemon's mount namespace where it
has one of its own), as the agent may not see the daemon's files itself.
"""

from __future__ import annotations

import logging
import posixpath
import secrets
import threading

from bollard.agent.drivers.libvirt.host_tools import HostTools
from bollard.domain.errors import DriverError

log = logging.getLogger(__name__)

TRASH_DIR = ".bollard-trash"  # in each pool's directory (hidden: not a volume file name)
SUFFIX = ".trash"
PUT_TIMEOUT = 30.0  # seconds a link into the trash may take (it is instant)

# $1 pool directory, $2 volume file, $3 trash entry. The pool's directory must exist (the
# trash is never made anywhere else); the link fails where the file system has none.
_PUT = (
    "set -e\n"
    '[ -d "$1" ] || { echo "no pool directory $1" >&2; exit 1; }\n'
    '[ -f "$1/$2" ] || { echo "no file $2 in $1" >&2; exit 1; }\n'
    'mkdir -p -- "$1/' + TRASH_DIR + '"\n'
    'ln -- "$1/$2" "$1/' + TRASH_DIR + '/$3"\n'
)
# $1 pool directory, $2 the entry to remove ("*" + SUFFIX: all of them).
_REMOVE = 'cd -- "$1/' + TRASH_DIR + '" 2>/dev/null || exit 0\nrm -f -- $2\n'


def trash_dir(directory: str) -> str:
    """The trash directory of the pool at ``directory``."""
    return posixpath.join(directory, TRASH_DIR)


def entry_name(file: str) -> str:
    """A new trash entry for volume file ``file`` (unique: a shared pool's hosts share it)."""
    return f"{file}.{secrets.token_hex(8)}{SUFFIX}"


class Trash:
    """The trash of every pool of one driver. ``put`` and ``take_back`` block (call them in
    a libvirt call's thread); the emptying runs in a daemon thread per pool directory (not
    as an asyncio task, which an event loop's end could leave waiting for its process; a
    thread ends with the agent process, and its ``rm`` with it: the next start empties)."""

    def __init__(self, tools: HostTools) -> None:
        self.tools = tools
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._emptying: set[str] = set()  # pool directories being emptied now
        self._again: set[str] = set()  # asked again while being emptied: once more after
        self._seen: set[str] = set()  # pool directories this process has emptied once
        self._warned: set[str] = set()  # pool directories where no link could be made

    def put(self, directory: str, file: str) -> str | None:
        """Link ``file`` of the pool at ``directory`` into its trash; the entry, or None
        when no link was made (then delete the volume the slow way)."""
        entry = entry_name(file)
        argv = ["sh", "-c", _PUT, "sh", directory, file, entry]
        try:
            self.tools.run_now(f"link {file} into the trash", argv, PUT_TIMEOUT)
        except DriverError as exc:
            with self._lock:
                first = directory not in self._warned
                self._warned.add(directory)
            if first:
                log.info("pool %s: volumes deleted without the trash: %s", directory, exc.message)
            return None
        return entry

    def take_back(self, directory: str, entry: str) -> None:
        """Remove the trash entry of a delete that did not happen (its volume is still in
        the pool: that unlink frees nothing)."""
        argv = ["sh", "-c", _REMOVE, "sh", directory, entry]
        try:
            self.tools.run_now(f"remove {entry} from the trash", argv, PUT_TIMEOUT)
        except DriverError as exc:  # (the next emptying removes it)
            log.warning("pool %s: %s", directory, exc.message)

    def first_use(self, directory: str) -> None:
        """Empty the pool's trash if this process has not yet (what an agent that stopped
        or crashed left there)."""
        with self._lock:
            if directory in self._seen:
                return
        self.empty_soon(directory)

    def empty_soon(self, directory: str) -> None:
        """Unlink the pool's trash entries in the background (once more after the emptying
        under way, if there is one)."""
        with self._lock:
            self._seen.add(directory)
            if directory in self._emptying:
                self._again.add(directory)
                return
            self._emptying.add(directory)
        name = f"empty the trash of {directory}"
        threading.Thread(target=self._empty, args=(directory,), name=name, daemon=True).start()

    def _empty(self, directory: str) -> None:
        argv = ["sh", "-c", _REMOVE, "sh", directory, "*" + SUFFIX]
        while True:
            with self._lock:
                self._again.discard(directory)
            try:
                self.tools.run_now(f"empty the trash of pool {directory}", argv)
            except DriverError as exc:  # (tried again after the next delete)
                log.warning("%s", exc.message)
            with self._lock:
                if directory not in self._again:
                    self._emptying.discard(directory)
                    self._idle.notify_all()
                    return

    def wait_idle(self, timeout: float) -> bool:
        """Wait (up to ``timeout`` seconds) until no trash is being emptied; whether none
        is (tests)."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._emptying, timeout)
