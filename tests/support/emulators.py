"""BMC emulators that the power drivers' contract tests run against, started by the tests.

- Redfish: sushy-tools' emulator (PyPI ``sushy-tools``, a test extra) with its fake systems
  driver (``SUSHY_EMULATOR_FAKE_DRIVER``), HTTP basic auth (a bcrypt htpasswd file,
  ``SUSHY_EMULATOR_AUTH_FILE``), its state in a directory of the test's
  (``SUSHY_EMULATOR_STATE_DIR``), on a free loopback port. The fake driver applies a power
  change 1 to 11 s (at random) after accepting it; to keep the suite fast, the emulator is
  started through a two-line launcher that pins that delay to its minimum (the change then
  shows within a second). ``BOLLARD_SUSHY_REAL_DELAY=1`` runs it unchanged.
- IPMI: OpenIPMI's ``ipmi_sim`` (Debian package ``openipmi``, installed by
  ``scripts/install-ipmi-sim.sh`` when missing, unless ``BOLLARD_TEST_NO_INSTALL=1``; the
  tests are skipped, with the reason, when that is not possible), serving IPMI 2.0 on a
  free loopback UDP port. Its chassis power is kept in a file by a small chassis-control
  script (ipmi_sim's ``chassis_control`` hook).
  pyghmi's own BMC class (``pyghmi.ipmi.bmc.Bmc``) is not used: it always negotiates cipher
  suite 3 (SHA-1) while telling pyghmi's client, which proposes suite 17 (SHA-256), that
  its proposal was accepted, so the client's login fails (struct.error in RAKP2).

Every start waits for the emulator with a deadline; every stop terminates, then kills.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import httpx

from bollard.power import Credentials, PowerStatus

ROOT = Path(__file__).resolve().parents[2]
INSTALL_IPMI_SIM = ROOT / "scripts" / "install-ipmi-sim.sh"
START_DEADLINE = 20.0
EMULATOR_CREDENTIALS = Credentials("bollard", "emulator-pass")  # test-only secret


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], object], what: str, deadline: float) -> None:
    """Poll ``predicate`` until it is truthy; AssertionError at ``deadline`` (monotonic)."""
    delay = 0.01
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(delay)  # polling an external process, with a deadline
        delay = min(delay * 2, 0.2)


def stop_process(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(grace)


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# Redfish: sushy-tools


_SUSHY_LAUNCHER = """\
import sys
from sushy_tools.emulator.resources.systems import fakedriver
class _Soonest:
    @staticmethod
    def randint(a, b):
        return a
if hasattr(fakedriver, "random"):
    fakedriver.random = _Soonest()
else:
    print("bollard: cannot pin the fake driver's power delay", file=sys.stderr)
from sushy_tools.emulator import main
sys.exit(main.main())
"""


@dataclass
class SushyEmulator:
    base_url: str
    proc: subprocess.Popen[bytes]
    log: Path
    credentials: Credentials = EMULATOR_CREDENTIALS
    free: dict[PowerStatus, list[str]] = field(default_factory=dict)

    def take_system(self, initial: PowerStatus) -> str:
        """A system id no other test has used, powered ``initial`` at the start."""
        pool = self.free[initial]
        if not pool:
            raise RuntimeError(f"no unused fake system left that starts {initial.value}")
        return pool.pop()

    def system_url(self, system: str) -> str:
        return f"{self.base_url}/redfish/v1/Systems/{system}"

    def power(self, system: str) -> PowerStatus:
        """The system's PowerState, read with a plain HTTP client (not the driver)."""
        auth = (self.credentials.username, self.credentials.password)
        doc = httpx.get(self.system_url(system), auth=auth, timeout=5).json()
        return {"On": PowerStatus.ON, "Off": PowerStatus.OFF}[doc["PowerState"]]

    def stop(self) -> None:
        stop_process(self.proc)


def start_sushy(workdir: Path, per_state: int = 16) -> SushyEmulator:
    """sushy-emulator with ``per_state`` fake systems initially on and as many off."""
    import bcrypt

    workdir.mkdir(parents=True, exist_ok=True)
    creds = EMULATOR_CREDENTIALS
    hashed = bcrypt.hashpw(creds.password.encode(), bcrypt.gensalt(rounds=4)).decode()
    auth_file = workdir / "htpasswd"
    auth_file.write_text(f"{creds.username}:{hashed}\n")
    free: dict[PowerStatus, list[str]] = {PowerStatus.ON: [], PowerStatus.OFF: []}
    systems = []
    for state in (PowerStatus.ON, PowerStatus.OFF):
        for i in range(per_state):
            system = str(uuid.uuid4())
            free[state].append(system)
            name = f"fake-{state.value}-{i}"
            power = "On" if state == PowerStatus.ON else "Off"
            systems.append({"uuid": system, "name": name, "power_state": power, "nics": []})
    port = free_port()
    config = workdir / "sushy.conf"
    config.write_text(
        f"SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'\n"
        f"SUSHY_EMULATOR_LISTEN_PORT = {port}\n"
        f"SUSHY_EMULATOR_FAKE_DRIVER = True\n"
        f"SUSHY_EMULATOR_FAKE_SYSTEMS = {systems!r}\n"
        f"SUSHY_EMULATOR_STATE_DIR = {str(workdir / 'state')!r}\n"
        f"SUSHY_EMULATOR_AUTH_FILE = {str(auth_file)!r}\n"
    )
    if os.environ.get("BOLLARD_SUSHY_REAL_DELAY") == "1":
        argv = [sys.executable, "-m", "sushy_tools.emulator.main", "--config", str(config)]
    else:
        argv = [sys.executable, "-c", _SUSHY_LAUNCHER, "--config", str(config)]
    log = workdir / "sushy.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=workdir)
    emulator = SushyEmulator(f"http://127.0.0.1:{port}", proc, log, free=free)
    auth = (creds.username, creds.password)

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"sushy-emulator exited early:\n{_log_tail(log)}")
        try:
            return httpx.get(f"{emulator.base_url}/redfish/v1/", auth=auth).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(ready, "sushy-emulator to answer", time.monotonic() + START_DEADLINE)
    except BaseException:
        emulator.stop()
        raise
    return emulator


# IPMI: OpenIPMI's ipmi_sim

_CHASSIS_CONTROL = """\
#!/bin/sh
# ipmi_sim chassis_control hook: <state file> <mc> get power | set power <0|1> [...]
state="$1"; shift; shift
op="$1"; shift
if [ "$op" = get ]; then
    for p in "$@"; do
        [ "$p" = power ] && echo "power:$(cat "$state" 2>/dev/null || echo 0)"
    done
    exit 0
fi
while [ $# -ge 2 ]; do
    [ "$1" = power ] && echo "$2" > "$state.tmp" && mv "$state.tmp" "$state"
    shift 2
done
"""

_EMU_COMMANDS = """\
mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr
mc_enable 0x20
"""


@cache
def ipmi_sim_unavailable() -> str | None:
    """None when ipmi_sim can run (installing it first if needed, unless
    BOLLARD_TEST_NO_INSTALL=1), else why not."""
    if shutil.which("ipmi_sim"):
        return None
    if os.environ.get("BOLLARD_TEST_NO_INSTALL") == "1":
        return "OpenIPMI's ipmi_sim is not installed (BOLLARD_TEST_NO_INSTALL=1: not trying)"
    try:
        done = subprocess.run(
            ["sh", str(INSTALL_IPMI_SIM)], capture_output=True, text=True, timeout=300
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"OpenIPMI's ipmi_sim is not installed and {INSTALL_IPMI_SIM.name} failed: {exc}"
    if done.returncode != 0 or not shutil.which("ipmi_sim"):
        why = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no reason given"]
        return f"OpenIPMI's ipmi_sim is not installed and cannot be installed: {why[0]}"
    return None


@dataclass
class IpmiSim:
    address: str
    proc: subprocess.Popen[bytes]
    state_file: Path
    log: Path
    credentials: Credentials = EMULATOR_CREDENTIALS

    def power(self) -> PowerStatus:
        """The chassis power as the emulator keeps it (not read over IPMI)."""
        try:
            raw = self.state_file.read_text().strip()
        except FileNotFoundError:
            raw = "0"
        return PowerStatus.ON if raw == "1" else PowerStatus.OFF

    def set_power(self, status: PowerStatus) -> None:
        tmp = self.state_file.with_suffix(".set")
        tmp.write_text("1\n" if status == PowerStatus.ON else "0\n")
        tmp.replace(self.state_file)

    def stop(self) -> None:
        stop_process(self.proc)


def _udp_port_bound(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def start_ipmi_sim(workdir: Path) -> IpmiSim:
    workdir.mkdir(parents=True, exist_ok=True)
    binary = shutil.which("ipmi_sim")
    assert binary is not None, "call ipmi_sim_unavailable() first"
    chassis = workdir / "chassis-control.sh"
    chassis.write_text(_CHASSIS_CONTROL)
    chassis.chmod(0o755)
    state_file = workdir / "power"
    state_file.write_text("0\n")
    creds = EMULATOR_CREDENTIALS
    port = free_port(socket.SOCK_DGRAM)
    lan_conf = workdir / "lan.conf"
    lan_conf.write_text(
        'name "bollard-test-bmc"\n'
        "set_working_mc 0x20\n"
        "  startlan 1\n"
        f"    addr 127.0.0.1 {port}\n"
        "    priv_limit admin\n"
        "    allowed_auths_callback none md2 md5 straight\n"
        "    allowed_auths_user none md2 md5 straight\n"
        "    allowed_auths_operator none md2 md5 straight\n"
        "    allowed_auths_admin none md2 md5 straight\n"
        f"    guid {uuid.uuid4().hex}\n"
        "  endlan\n"
        f'  chassis_control "{chassis} {state_file} 0x20"\n'
        '  user 1 true "" "unused" user 10 none md2 md5 straight\n'
        f'  user 2 true "{creds.username}" "{creds.password}" admin 10 none md2 md5 straight\n'
    )
    emu = workdir / "emu.cmd"
    emu.write_text(_EMU_COMMANDS)
    log = workdir / "ipmi_sim.log"
    argv = [binary, "-n", "-c", str(lan_conf), "-f", str(emu), "-s", str(workdir / "state")]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=workdir
        )
    sim = IpmiSim(f"127.0.0.1:{port}", proc, state_file, log)

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"ipmi_sim exited early:\n{_log_tail(log)}")
        return _udp_port_bound(port)

    try:
        wait_for(ready, "ipmi_sim to listen", time.monotonic() + START_DEADLINE)
    except BaseException:
        sim.stop()
        raise
    return sim


# BMCs that never answer, to check that timeouts are enforced


class SilentUdp:
    """A bound UDP port that reads nothing and answers nothing (a hung BMC)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"

    def close(self) -> None:
        self.sock.close()


class SilentTcp:
    """A listening TCP port whose connections are accepted (by the kernel) but never
    answered: an HTTP client waits for a response that never comes."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def close(self) -> None:
        self.sock.close()
