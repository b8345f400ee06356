"""A test environment for the libvirt driver: real libvirt daemons ("hosts") on this one
machine that run tiny QEMU guests under TCG and can live-migrate them to each other.

- ``libvirt_unavailable_reason()``: None when the machine allows it (root, Linux namespaces,
  the packages installed or installable by ``scripts/libvirt/install.sh``, which this runs
  once per process unless ``BOLLARD_TEST_NO_INSTALL=1``), else the reason to skip with.
- ``ensure_guest()``: the tiny guest (tests/support/libvirt_guest.py), built once and cached
  in ``$BOLLARD_LIBVIRT_GUEST_DIR`` (default ``~/.cache/bollard/libvirt-guest``).
- ``start_libvirt_hosts(base_dir, count)``: a context manager that starts ``count``
  libvirtd by hand (no systemd), each with its own configuration, sockets, TCP port,
  host UUID and migration port range, and stops them, with every QEMU they started, on exit.

Each daemon runs under ``unshare --mount --pid --fork --kill-child``: in a private mount
namespace, where its own directories are bind-mounted over /etc/libvirt, /run/libvirt,
/var/lib/libvirt, /var/cache/libvirt and /var/log/libvirt, and in a PID namespace of its
own, so that killing ``unshare`` (as ``stop()`` does, and as happens when the test process
dies: ``unshare`` gets PR_SET_PDEATHSIG) makes the kernel kill libvirtd and every QEMU it
started. The namespace's PID 1 is a shell that waits for libvirtd and reaps the QEMU
processes libvirtd daemonises (a zombie QEMU would make libvirt's destroy hang).

Every host runs libvirt's lock manager, as a real host should: its own ``virtlockd``
(started by the namespace's PID 1 before libvirtd, its socket in the host's /run/libvirt
where libvirtd looks for it; a libvirtd running as root does not spawn one itself), and
``lock_manager = "lockd"`` in its qemu.conf with a qemu-lockd.conf that gives every disk a
lease (``auto_disk_leases``, ``require_lease_for_disks``). There is no
``file_lockspace_dir``: virtlockd takes its fcntl lock on each disk file itself (``direct``
leases), which two virtlockd processes on this one machine see as they would on an NFS
share with locking. A lockspace directory would instead name each lease by a hash of the
disk's path, and the hosts' local pools, each at the same path (/var/lib/libvirt/...) in a
directory of its own, would then conflict if that directory were shared, and a shared disk
would not be guarded if it were not. virtlockd dies with its namespace, so a host's power
cut (``power_off_host``) drops its leases as a fenced host's would be.

- ``define_and_start_guest()`` / ``guest_domain_xml()``: the tiny guest as a domain, with
  raw libvirt-python, for the environment's own smoke tests (the driver writes its own XML).
- ``read_counter()`` / ``count_boots()``: progress read from a guest's serial console log.
- ``power_off_host()`` / ``power_on_host()``: a host's power cut (daemon and QEMUs killed)
  and its restart with the same configuration.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from tests.support.emulators import free_port, wait_for
from tests.support.libvirt_guest import (
    BOOT_PREFIX,
    COUNTER_PREFIX,
    Guest,
    GuestBuildError,
    build_guest,
)

__all__ = [
    "Guest",
    "GuestBuildError",
    "LibvirtHost",
    "count_boots",
    "define_and_start_guest",
    "ensure_guest",
    "ensure_installed",
    "guest_domain_xml",
    "libvirt_unavailable_reason",
    "power_off_host",
    "power_on_host",
    "read_counter",
    "start_libvirt_hosts",
]

ROOT = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = ROOT / "scripts" / "libvirt" / "install.sh"
INSTALL_LOCK = Path(tempfile.gettempdir()) / "bollard-libvirt-install.lock"
INSTALL_TIMEOUT = 900.0
READY_DEADLINE = 90.0  # a daemon answers within a second here; generous for a loaded machine
STOP_DEADLINE = 20.0
MIGRATION_PORTS = 4
LIBVIRT_DIRS = {
    "etc": "/etc/libvirt",
    "run": "/run/libvirt",
    "lib": "/var/lib/libvirt",
    "cache": "/var/cache/libvirt",
    "log": "/var/log/libvirt",
}
GUEST_CMDLINE = "console=ttyS0 quiet panic=-1"
_PR_SET_PDEATHSIG = 1

# Runs as PID 1 of the daemon's PID namespace ($1 = the host directory). It stays the
# parent of the daemonised QEMU processes and reaps them; when libvirtd exits it exits
# too, and the kernel then kills whatever is left in the namespace.
_NAMESPACE_INIT = """\
set -e
d=$1
mount --bind "$d/etc" /etc/libvirt
mount --bind "$d/run" /run/libvirt
mount --bind "$d/lib" /var/lib/libvirt
mount --bind "$d/cache" /var/cache/libvirt
mount --bind "$d/log" /var/log/libvirt
virtlockd --config "$d/etc/virtlockd.conf" --pid-file "$d/virtlockd.pid" &
libvirtd --listen --config "$d/etc/libvirtd.conf" --pid-file "$d/libvirtd.pid" &
wait $!
"""
# What every host's qemu-lockd.conf says (see the module docstring): every disk has a lease,
# taken by virtlockd as an fcntl lock on the disk file itself (no file_lockspace_dir).
QEMU_LOCKD_CONF = "auto_disk_leases = 1\nrequire_lease_for_disks = 1\n"
VIRTLOCKD_SOCKET = "virtlockd-sock"  # in the host's /run/libvirt
VIRTLOCKD_ADMIN = "virtlockd-admin-sock"  # there too


# Installation


@cache
def ensure_installed() -> str | None:
    """Run scripts/libvirt/install.sh into this interpreter's venv, once per process (other
    processes wait on a lock file meanwhile). None on success, else the reason it failed."""
    try:
        with INSTALL_LOCK.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            done = subprocess.run(
                ["sh", str(INSTALL_SCRIPT), sys.prefix],
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT,
            )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{INSTALL_SCRIPT.name} could not run: {exc}"
    if done.returncode != 0:
        why = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no reason given"]
        return why[0]
    return None


def _missing_tools() -> list[str]:
    tools = ("libvirtd", "virtlockd", "qemu-system-x86_64", "unshare", "mount")
    return [t for t in tools if shutil.which(t) is None]


@cache
def libvirt_unavailable_reason() -> str | None:
    """None when libvirt hosts and guests can run here (installing first when needed),
    else a human reason, printed with the skip."""
    if not sys.platform.startswith("linux"):
        return f"libvirt tests need Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return "libvirt tests need root (their libvirtd and QEMU run in namespaces of their own)"
    if os.environ.get("BOLLARD_TEST_NO_INSTALL") == "1":
        missing = _missing_tools()
        if missing:
            return f"{', '.join(missing)} not installed (BOLLARD_TEST_NO_INSTALL=1: not trying)"
    else:
        failure = ensure_installed()
        if failure is not None:
            return f"libvirt/QEMU not installed and cannot be installed: {failure}"
    missing = _missing_tools()
    if missing:
        return f"{', '.join(missing)} missing after {INSTALL_SCRIPT.name}"
    try:
        import importlib

        importlib.invalidate_caches()  # install.sh may just have pip-installed it
        importlib.import_module("libvirt")
    except ImportError as exc:
        return f"libvirt-python is not importable: {exc}"
    probe = subprocess.run(
        ["unshare", "--mount", "--pid", "--fork", "--mount-proc", "true"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if probe.returncode != 0:
        return f"cannot create mount/PID namespaces here: {probe.stderr.strip()}"
    return None


# The tiny guest


def default_guest_dir() -> Path:
    configured = os.environ.get("BOLLARD_LIBVIRT_GUEST_DIR")
    if configured:
        return Path(configured)
    cache_home = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache_home) / "bollard" / "libvirt-guest"


def ensure_guest(cache_dir: Path | None = None) -> Guest:
    """The tiny guest's kernel and initramfs, built into ``cache_dir`` when not cached."""
    return build_guest(cache_dir if cache_dir is not None else default_guest_dir())


# libvirt daemons


class DaemonExited(RuntimeError):
    pass


@cache
def _libvirt() -> Any:
    import libvirt

    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # errors raise; no stderr noise
    return libvirt


def _set_pdeathsig() -> None:
    """In the child before exec: die with SIGKILL when the parent (the test process) dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port_range(count: int) -> tuple[int, int]:
    """``count`` consecutive free loopback TCP ports, picked at random below the kernel's
    ephemeral range (so that no outgoing connection takes one meanwhile)."""
    try:
        ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral = 32768
    for _ in range(200):
        low = random.randrange(10000, max(ephemeral, 10000 + 2 * count) - count)
        if all(_port_free(p) for p in range(low, low + count)):
            return low, low + count - 1
    raise RuntimeError(f"no {count} consecutive free TCP ports found")


def _log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _namespace_members(ns: str) -> list[tuple[int, str]]:
    """(pid, command name) of every process in the PID namespace ``ns`` ("pid:[N]")."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "ns" / "pid") == ns:
                found.append((int(entry.name), (entry / "comm").read_text().strip()))
        except OSError:
            continue  # exited meanwhile
    return found


@dataclass
class LibvirtHost:
    """One libvirtd, as a stand-in for one hypervisor host."""

    name: str
    dir: Path
    tcp_port: int
    migration_ports: tuple[int, int]
    host_uuid: str
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    pid_namespace: str | None = None

    @property
    def uri(self) -> str:
        return f"qemu+tcp://127.0.0.1:{self.tcp_port}/system"

    @property
    def unix_uri(self) -> str:
        return f"qemu:///system?socket={self.dir / 'sock' / 'libvirt-sock'}"

    @property
    def migration_uri(self) -> str:
        """The ``VIR_MIGRATE_PARAM_URI`` for live migration to this host."""
        return f"tcp://127.0.0.1:{self.migration_ports[0]}"

    @property
    def log(self) -> Path:
        return self.dir / "libvirtd.log"

    @property
    def virtlockd_log(self) -> Path:
        return self.dir / "virtlockd.log"

    @property
    def virtlockd_socket(self) -> Path:
        """virtlockd's socket (the daemon's /run/libvirt/virtlockd-sock), seen from here."""
        return self.dir / "run" / VIRTLOCKD_SOCKET

    @property
    def qemu_log_dir(self) -> Path:
        """QEMU's own stdout/stderr per domain: ``<domain name>.log``."""
        return self.dir / "log" / "qemu"

    def connect(self) -> Any:
        """A new ``libvirt.virConnect`` to this host (close it when done)."""
        return _libvirt().open(self.uri)

    def processes(self) -> list[tuple[int, str]]:
        """(pid, name) of the daemon and every process it started (QEMU) still alive."""
        return [] if self.pid_namespace is None else _namespace_members(self.pid_namespace)

    def _write_config(self) -> None:
        for sub in (*LIBVIRT_DIRS, "sock"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        for sock in (self.dir / "sock" / "libvirt-sock", self.dir / "run" / VIRTLOCKD_ADMIN):
            if len(str(sock).encode()) > 100:
                raise RuntimeError(f"{sock} is too long for a Unix socket path; use a shorter dir")
        (self.dir / "etc" / "libvirtd.conf").write_text(
            f'unix_sock_dir = "{self.dir / "sock"}"\n'
            'unix_sock_rw_perms = "0700"\n'
            'auth_unix_ro = "none"\n'
            'auth_unix_rw = "none"\n'
            "listen_tls = 0\n"
            "listen_tcp = 1\n"
            'listen_addr = "127.0.0.1"\n'
            f'tcp_port = "{self.tcp_port}"\n'
            'auth_tcp = "none"\n'
            f'host_uuid = "{self.host_uuid}"\n'
            f'log_outputs = "3:file:{self.log}"\n'
        )
        (self.dir / "etc" / "qemu.conf").write_text(
            'user = "root"\n'
            'group = "root"\n'
            "dynamic_ownership = 0\n"
            "remember_owner = 0\n"
            'security_driver = "none"\n'
            'stdio_handler = "file"\n'
            "namespaces = [ ]\n"
            f"migration_port_min = {self.migration_ports[0]}\n"
            f"migration_port_max = {self.migration_ports[1]}\n"
            'lock_manager = "lockd"\n'
        )
        (self.dir / "etc" / "qemu-lockd.conf").write_text(QEMU_LOCKD_CONF)
        (self.dir / "etc" / "virtlockd.conf").write_text(
            f'log_outputs = "3:file:{self.virtlockd_log}"\n'
        )

    def _spawn(self) -> None:
        self._write_config()
        for mountpoint in LIBVIRT_DIRS.values():
            Path(mountpoint).mkdir(parents=True, exist_ok=True)
        own_ns = os.readlink("/proc/self/ns/pid")
        with (self.dir / "namespace.log").open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    "unshare",
                    "--mount",
                    "--propagation",
                    "private",
                    "--pid",
                    "--fork",
                    "--mount-proc",
                    "--kill-child",
                    "--",
                    "sh",
                    "-c",
                    _NAMESPACE_INIT,
                    "sh",
                    str(self.dir),
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_set_pdeathsig,
            )
        proc = self.proc

        def namespace_made() -> bool:
            if proc.poll() is not None:
                raise DaemonExited(self._exit_report())
            try:
                self.pid_namespace = os.readlink(f"/proc/{proc.pid}/ns/pid_for_children")
            except OSError:
                return False
            return self.pid_namespace != own_ns

        wait_for(namespace_made, f"{self.name}'s PID namespace", time.monotonic() + 10)

    def _namespace_init(self) -> int | None:
        """The host PID of the namespace's PID 1 (unshare's child), if it still runs."""
        if self.proc is None or self.pid_namespace is None:
            return None
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except OSError:
            return None
        for pid in children.split():
            with suppress(OSError):
                if os.readlink(f"/proc/{pid}/ns/pid") == self.pid_namespace:
                    return int(pid)
        return None

    def _exit_report(self) -> str:
        code = None if self.proc is None else self.proc.returncode
        return (
            f"libvirtd {self.name} exited early (status {code}):\n"
            f"{_log_tail(self.dir / 'namespace.log')}\n{_log_tail(self.log)}\n"
            f"{_log_tail(self.virtlockd_log)}"
        )

    def _wait_ready(self, deadline: float) -> None:
        libvirt = _libvirt()
        proc = self.proc
        assert proc is not None

        def answers() -> bool:
            if proc.poll() is not None:
                raise DaemonExited(self._exit_report())
            try:
                conn = libvirt.open(self.uri)
            except libvirt.libvirtError:
                return False
            conn.close()
            return True

        def locks_answer() -> bool:
            if proc.poll() is not None:
                raise DaemonExited(self._exit_report())
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                try:
                    s.connect(str(self.virtlockd_socket))
                except OSError:  # not there yet, or a dead one's socket file
                    return False
            return True

        wait_for(answers, f"libvirtd {self.name} to accept a connection on {self.uri}", deadline)
        try:
            wait_for(locks_answer, f"virtlockd of {self.name} to listen", deadline)
        except AssertionError as exc:
            raise AssertionError(f"{exc}:\n{_log_tail(self.virtlockd_log)}") from None

    def stop(self) -> None:
        """Kill the daemon and every QEMU it started; return once none is left."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            # SIGKILL the namespace's PID 1: the kernel then kills everything in the
            # namespace, and unshare, still alive, reaps it (the machine's PID 1 would reap
            # it only seconds later). Killing unshare instead would work too (--kill-child).
            init = self._namespace_init()
            if init is None:
                self.proc.kill()
            else:
                with suppress(ProcessLookupError):
                    os.kill(init, signal.SIGKILL)
            try:
                self.proc.wait(STOP_DEADLINE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_DEADLINE)
        wait_for(
            lambda: not self.processes(),
            f"the processes of libvirtd {self.name} to exit",
            time.monotonic() + STOP_DEADLINE,
        )


def _new_host(base_dir: Path, index: int) -> LibvirtHost:
    name = chr(ord("a") + index) if index < 26 else f"h{index}"
    host_dir = base_dir / name
    return LibvirtHost(
        name=name,
        dir=host_dir,
        tcp_port=free_port(),
        migration_ports=_free_port_range(MIGRATION_PORTS),
        host_uuid=str(uuid.uuid4()),
    )


@contextmanager
def start_libvirt_hosts(base_dir: Path, count: int = 2) -> Iterator[list[LibvirtHost]]:
    """Start ``count`` libvirt hosts (named a, b, ... under ``base_dir``), wait until each
    accepts connections, yield them; stop them all (with their QEMUs) on exit."""
    base_dir.mkdir(parents=True, exist_ok=True)
    hosts: list[LibvirtHost] = []
    try:
        for i in range(count):
            hosts.append(_new_host(base_dir, i))
            hosts[-1]._spawn()
        deadline = time.monotonic() + READY_DEADLINE
        for i in range(count):
            for attempt in range(3):
                try:
                    hosts[i]._wait_ready(deadline)
                    break
                except DaemonExited as exc:
                    # Another process may have taken the free port we picked: new ports.
                    if attempt == 2 or "Address already in use" not in str(exc):
                        raise
                    hosts[i].stop()
                    hosts[i] = _new_host(base_dir, i)
                    shutil.rmtree(hosts[i].dir, ignore_errors=True)
                    hosts[i]._spawn()
        yield hosts
    finally:
        errors = []
        for host in hosts:
            try:
                host.stop()
            except (AssertionError, OSError, subprocess.SubprocessError) as exc:
                errors.append(f"{host.name}: {exc}")
        if errors:
            raise AssertionError("libvirt hosts left processes behind: " + "; ".join(errors))


# Guest domains (raw libvirt-python; for the environment's own tests)


def guest_domain_xml(name: str, guest: Guest, console_log: Path, memory_mib: int = 128) -> str:
    """Domain XML for the tiny guest: TCG, q35, its serial console appended to a file."""
    domain = ET.Element("domain", type="qemu")
    ET.SubElement(domain, "name").text = name
    ET.SubElement(domain, "memory", unit="MiB").text = str(memory_mib)
    ET.SubElement(domain, "vcpu").text = "1"
    os_el = ET.SubElement(domain, "os")
    ET.SubElement(os_el, "type", arch="x86_64", machine="q35").text = "hvm"
    ET.SubElement(os_el, "kernel").text = str(guest.kernel)
    ET.SubElement(os_el, "initrd").text = str(guest.initrd)
    ET.SubElement(os_el, "cmdline").text = GUEST_CMDLINE
    ET.SubElement(ET.SubElement(domain, "features"), "acpi")
    cpu = ET.SubElement(domain, "cpu", mode="custom", match="exact", check="none")
    ET.SubElement(cpu, "model", fallback="forbid").text = "qemu64"
    ET.SubElement(domain, "on_poweroff").text = "destroy"
    ET.SubElement(domain, "on_reboot").text = "restart"
    ET.SubElement(domain, "on_crash").text = "destroy"
    devices = ET.SubElement(domain, "devices")
    serial = ET.SubElement(devices, "serial", type="file")
    ET.SubElement(serial, "source", path=str(console_log), append="on")
    ET.SubElement(serial, "target", port="0")
    ET.SubElement(devices, "controller", type="usb", model="none")
    ET.SubElement(devices, "memballoon", model="none")
    return ET.tostring(domain, encoding="unicode")


def define_and_start_guest(conn: Any, name: str, guest: Guest, console_log: Path) -> Any:
    """Define (persistently) and start the tiny guest on ``conn``; the ``virDomain``."""
    dom = conn.defineXML(guest_domain_xml(name, guest, console_log))
    dom.create()
    return dom


# Complete lines only: a line still being written may lack digits (or its newline).
_COUNTER_LINE = re.compile(re.escape(COUNTER_PREFIX.encode()) + rb"(\d+)\r?\n")
_TAIL_BYTES = 64 * 1024


def read_counter(console_log: Path) -> int | None:
    """The last complete ``bollard-guest counter N`` line's N, or None (no such line yet, or
    no log). Reads only the log's tail; other bytes, valid UTF-8 or not, are ignored."""
    try:
        with console_log.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - _TAIL_BYTES))
            tail = f.read()
    except OSError:
        return None
    matches = _COUNTER_LINE.findall(tail)
    return int(matches[-1]) if matches else None


def count_boots(console_log: Path) -> int:
    """How many times the guest's /init started, by its boot lines in the console log."""
    try:
        return console_log.read_bytes().count(BOOT_PREFIX.encode())
    except OSError:
        return 0


# Helpers for the driver's contract suite (tests/contract/test_hypervisor_contract.py).

BOLLARD_METADATA_NS = "https://bollard.dev/xmlns/vm/1"


def disk_image(host: LibvirtHost, uuid: str, device: str) -> Path:
    """Where a VM's disk in ``host``'s Bollard pool (at the driver's default image
    directory, inside the daemon's /var/lib/libvirt) is, as the test process sees it."""
    from bollard.agent.drivers.libvirt.storage import DEFAULT_IMAGE_DIR, volume_name

    inside = Path(DEFAULT_IMAGE_DIR).relative_to(LIBVIRT_DIRS["lib"])
    return host.dir / "lib" / inside / volume_name(uuid, device)


def write_pattern(image: Path, byte: int, offset_mib: int, length_mib: int) -> None:
    """Write ``byte`` repeated into the guest-visible data of a qcow2 image (not in use)."""
    pattern = f"write -P {byte:#x} {offset_mib}M {length_mib}M"
    subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", pattern, str(image)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip


def same_disk_data(a: Path, a_format: str, b: Path) -> bool:
    """Whether two images hold the same guest-visible data (``b`` a qcow2 image, which a
    running QEMU may hold: read without its lock)."""
    done = subprocess.run(
        ["qemu-img", "compare", "-U", "-f", a_format, "-F", "qcow2", str(a), str(b)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    if done.returncode not in (0, 1):
        raise RuntimeError(f"qemu-img compare failed: {done.stderr.strip()}")
    return done.returncode == 0


def raw_copy(image: Path, out: Path) -> Path:
    """The guest-visible data of a qcow2 image, as a raw file (to compare with later)."""
    subprocess.run(
        ["qemu-img", "convert", "-U", "-f", "qcow2", "-O", "raw", str(image), str(out)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return out


def remove_bollard_domains(host: LibvirtHost) -> None:
    """Destroy and undefine every domain Bollard's driver made on `host` (earlier tests')."""
    lv = _libvirt()
    with closing(host.connect()) as conn:
        for dom in conn.listAllDomains(0):
            xml = dom.XMLDesc(lv.VIR_DOMAIN_XML_INACTIVE)
            if BOLLARD_METADATA_NS not in xml:
                continue
            try:
                if dom.isActive():
                    dom.destroy()
                if dom.isPersistent():
                    dom.undefine()
            except lv.libvirtError as exc:
                if exc.get_error_code() != lv.VIR_ERR_NO_DOMAIN:
                    raise


def ignore_acpi_on(host: LibvirtHost, uuid: str) -> None:
    """Make the guest of domain `uuid` deaf to the ACPI power button: its kernel is booted
    with the button module blacklisted (the guest's /init then cannot load it), restarting
    the domain if it runs."""
    lv = _libvirt()
    with closing(host.connect()) as conn:
        dom = conn.lookupByUUIDString(uuid)
        root = ET.fromstring(dom.XMLDesc(lv.VIR_DOMAIN_XML_INACTIVE))
        cmdline = root.find("os/cmdline")
        if cmdline is None:
            raise AssertionError(f"domain {uuid} boots no kernel command line")
        cmdline.text = (cmdline.text or "") + " module_blacklist=button"
        conn.defineXML(ET.tostring(root, encoding="unicode"))
        if dom.isActive():
            dom.destroy()
            dom.create()


def power_off_host(host: LibvirtHost) -> None:
    """Power `host` off: its daemon, its virtlockd (so its disk leases go, as a fenced
    host's do) and every QEMU it started are killed at once (its guests die with no
    shutdown, as in a power cut); until `power_on_host`, its daemon does not answer. The
    domains' definitions stay on its disk."""
    host.stop()


def power_on_host(host: LibvirtHost) -> None:
    """Start `host`'s daemon (and its virtlockd) again if it is not running (after
    `power_off_host`), with the same directory, ports and host uuid; return once both
    accept connections. Its domains are defined and shut off, as after a reboot."""
    if host.proc is not None and host.proc.poll() is None:
        return
    host._spawn()
    host._wait_ready(time.monotonic() + READY_DEADLINE)
