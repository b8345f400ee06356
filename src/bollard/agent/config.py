"""Agent configuration, and turning it into the things the agent runs with."""

from __future__ import annotations

import ipaddress
import shlex
import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from bollard.agent.drivers.base import HypervisorDriver
from bollard.domain.errors import InvalidInput
from bollard.domain.protocol import AGENT_PATH
from bollard.domain.sriov import PfConfig

DRIVERS = ("sim", "libvirt")
SYSTEM_CA = "system"  # --ca-file system: the operating system's trust store
LIBVIRT_DOMAIN_TYPES = ("kvm", "qemu")


class AgentConfigError(ValueError):
    """Bad agent configuration; the message is one line, fit to show an operator."""


@dataclass(frozen=True)
class AgentConfig:
    server_url: str  # http(s)://host:port of a Bollard server
    node: str
    token_file: Path  # holds the node's token; the token itself is never logged
    state_dir: Path
    # More servers of the same cluster (`--server` repeated), dialled in turn after
    # server_url when a connection fails or is lost (agent/servers.py).
    extra_server_urls: tuple[str, ...] = ()
    driver: str = "sim"
    fabric_dir: Path | None = None  # sim only
    sim_latency: float = 0.2
    sim_migration_rate: float = 2048.0  # MiB/s: a sim migration lasts memory / rate seconds
    sim_copy_rate: float = 2048.0  # MiB/s: a sim volume copy lasts size / rate seconds
    vcpus: int = 16  # sim
    memory_mb: int = 32768  # sim
    libvirt_uri: str = "qemu:///system"
    libvirt_domain_type: str = "kvm"  # "qemu": software emulation, where KVM is not usable
    libvirt_console_dir: Path | None = None  # serial console logs; None: STATE_DIR/consoles
    libvirt_vnc_listen: str = "127.0.0.1"  # address the VMs' VNC displays listen on
    # Where libvirtd keeps the VMs' disks (its "bollard" storage pool); the same on all hosts.
    libvirt_image_dir: str = "/var/lib/libvirt/images/bollard"
    # Testing and demo facility: boot every VM from this kernel (VMs have no images yet).
    libvirt_boot_kernel: Path | None = None
    libvirt_boot_initrd: Path | None = None
    libvirt_boot_cmdline: str | None = None
    # How peers' libvirtd reach this host's to migrate VMs here, and the address for the
    # migration data stream; None: VMs cannot be migrated to this host.
    libvirt_migration_uri: str | None = None
    libvirt_migration_address: str | None = None
    libvirt_migration_max_downtime_ms: int | None = None
    libvirt_migration_bandwidth_mib: int | None = None  # MiB/s; None: as fast as it goes
    # A command line run before qemu-img and the other tools on the daemon's volume files,
    # e.g. "nsenter --mount=/proc/PID/ns/mnt --" where libvirtd has a mount namespace of its
    # own (test daemons); None: they run as they are (a real host).
    libvirt_tool_prefix: str | None = None
    # MiB/s for volume copies and live moves of disks; None: as fast as they go.
    libvirt_copy_bandwidth_mib: float | None = None
    log_level: str = "INFO"
    backoff_initial: float = 0.2  # reconnect backoff, seconds
    backoff_max: float = 5.0
    connect_timeout: float = 10.0  # TCP + WebSocket handshake, and waiting for `welcome`
    send_timeout: float = 10.0
    # How long a clean shutdown of the host may wait for the server (agent/host_shutdown.py).
    shutdown_wait: float = 600.0
    # TLS (https servers): the CA that signed the server's certificate (a PEM file, or
    # "system"), and the certificate this agent presents if the server asks for one.
    ca_file: str | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    # SR-IOV PFs (`--sriov-pf DEVICE:VFS:PHYSNET[:MTU]`): set up at every agent start and
    # reported in every hello (agent/sriov_agent.py); `sriov_sysfs`: where a Linux host's
    # sysfs is (a fake tree in tests).
    sriov_pfs: tuple[PfConfig, ...] = ()
    sriov_sysfs: Path = Path("/sys")

    @property
    def server_urls(self) -> tuple[str, ...]:
        """Every configured server, ``server_url`` first."""
        return (self.server_url, *self.extra_server_urls)


def ws_url(server_url: str) -> str:
    """``http(s)://host:port[/prefix]`` → ``ws(s)://host:port[/prefix]`` + AGENT_PATH."""
    parts = urlsplit(server_url.strip())
    schemes = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}
    if parts.scheme not in schemes or not parts.netloc:
        raise AgentConfigError(
            f"server URL must look like http://host:port or https://host:port, got {server_url!r}"
        )
    path = parts.path.rstrip("/") + AGENT_PATH
    return urlunsplit((schemes[parts.scheme], parts.netloc, path, "", ""))


def is_tls(server_url: str) -> bool:
    """Whether the agent dials ``server_url`` with TLS (https, wss)."""
    return urlsplit(server_url.strip()).scheme in ("https", "wss")


def tls_context(
    server_url: str,
    ca_file: str | None,
    client_cert: Path | None = None,
    client_key: Path | None = None,
) -> ssl.SSLContext | None:
    """None for an http server; for https, a context that verifies the server's certificate
    with ``ca_file`` (there is no https without one) and presents the client certificate."""
    if not is_tls(server_url):
        if ca_file or client_cert or client_key:
            raise AgentConfigError(
                f"--ca-file, --client-cert and --client-key are for https servers, and"
                f" {server_url} is plain http"
            )
        return None
    if not ca_file:
        raise AgentConfigError(
            "an https server needs --ca-file: the CA that signed the server's certificate"
            f" (or `{SYSTEM_CA}` for the system's trust store)"
        )
    try:
        if ca_file == SYSTEM_CA:
            context = ssl.create_default_context()
        else:
            context = ssl.create_default_context(cafile=ca_file)
    except FileNotFoundError:
        raise AgentConfigError(f"the CA file {ca_file} does not exist") from None
    except ssl.SSLError:
        raise AgentConfigError(f"the CA file {ca_file} holds no PEM certificate") from None
    except OSError as exc:
        raise AgentConfigError(f"cannot read the CA file {ca_file}: {exc.strerror}") from None
    if client_cert is None and client_key is None:
        return context
    if client_cert is None or client_key is None:
        raise AgentConfigError("--client-cert and --client-key go together")
    try:
        context.load_cert_chain(client_cert, client_key)
    except ssl.SSLError as exc:
        raise AgentConfigError(
            f"cannot use the client certificate {client_cert} with the key {client_key}:"
            f" {exc.reason or exc}"
        ) from None
    except OSError as exc:
        raise AgentConfigError(
            f"cannot read the client certificate {client_cert} or key {client_key}:"
            f" {exc.strerror or exc}"
        ) from None
    return context


def config_tls(config: AgentConfig) -> ssl.SSLContext | None:
    return tls_context(config.server_url, config.ca_file, config.client_cert, config.client_key)


def read_token(path: Path) -> str:
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        raise AgentConfigError(f"token file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise AgentConfigError(f"cannot read token file {path}: {exc}") from None
    if not token:
        raise AgentConfigError(f"token file {path} is empty")
    if any(c.isspace() for c in token):
        raise AgentConfigError(f"token file {path} must hold a single token")
    return token


def validate(config: AgentConfig) -> None:
    """Raise AgentConfigError for anything that would stop the agent from running."""
    _validate_servers(config)
    if not config.node:
        raise AgentConfigError("node name must not be empty")
    if config.driver not in DRIVERS:
        raise AgentConfigError(f"unknown driver {config.driver!r}; available: {', '.join(DRIVERS)}")
    if config.driver == "sim" and config.fabric_dir is None:
        raise AgentConfigError("the sim driver needs a fabric directory (--fabric-dir)")
    if config.sim_latency < 0:
        raise AgentConfigError("sim latency must be >= 0")
    if config.sim_migration_rate <= 0:
        raise AgentConfigError("sim migration rate must be > 0")
    if config.sim_copy_rate <= 0:
        raise AgentConfigError("sim copy rate must be > 0")
    if config.vcpus < 0 or config.memory_mb < 0:
        raise AgentConfigError("vcpus and memory must be >= 0")
    if config.driver == "libvirt":
        _validate_libvirt(config)
    _validate_sriov(config)


def _validate_servers(config: AgentConfig) -> None:
    """Every address must be a server URL, and all of one kind (http or https): the TLS
    settings apply to every one of them."""
    for url in config.server_urls:
        ws_url(url)
    if len({is_tls(url) for url in config.server_urls}) > 1:
        raise AgentConfigError(
            "the --server URLs mix http and https; the TLS options apply to every server, so"
            f" give them all the same scheme: {', '.join(config.server_urls)}"
        )
    config_tls(config)


def _validate_sriov(config: AgentConfig) -> None:
    devices: set[str] = set()
    for pf in config.sriov_pfs:
        try:
            pf.check()
        except InvalidInput as exc:
            raise AgentConfigError(exc.message) from None
        if pf.device in devices:
            raise AgentConfigError(f"SR-IOV PF {pf.device}: configured more than once")
        devices.add(pf.device)


def console_dir(config: AgentConfig) -> Path:
    return config.libvirt_console_dir or config.state_dir / "consoles"


def _validate_libvirt(config: AgentConfig) -> None:
    from bollard.agent.drivers.libvirt.binding import INSTALL_HINT, available

    if not available():
        raise AgentConfigError(f"the libvirt driver needs libvirt-python; {INSTALL_HINT}")
    if not config.libvirt_uri.strip():
        raise AgentConfigError("the libvirt URI (--libvirt-uri) must not be empty")
    if config.libvirt_domain_type not in LIBVIRT_DOMAIN_TYPES:
        raise AgentConfigError(
            f"libvirt domain type must be one of {', '.join(LIBVIRT_DOMAIN_TYPES)}, "
            f"got {config.libvirt_domain_type!r}"
        )
    try:
        ipaddress.ip_address(config.libvirt_vnc_listen)
    except ValueError:
        raise AgentConfigError(
            f"the VNC listen address must be an IP address, got {config.libvirt_vnc_listen!r}"
        ) from None
    kernel = config.libvirt_boot_kernel
    if kernel is None and (config.libvirt_boot_initrd or config.libvirt_boot_cmdline):
        raise AgentConfigError(
            "--libvirt-boot-initrd and --libvirt-boot-cmdline need --libvirt-boot-kernel"
        )
    for option, path in (("kernel", kernel), ("initrd", config.libvirt_boot_initrd)):
        if path is not None and not path.is_file():
            raise AgentConfigError(f"the boot {option} {path} is not a file")
    tool_prefix(config)
    bandwidth = config.libvirt_copy_bandwidth_mib
    if bandwidth is not None and not bandwidth > 0:
        raise AgentConfigError(
            f"the copy bandwidth (--libvirt-copy-bandwidth-mib) must be > 0, got {bandwidth:g}"
        )


def tool_prefix(config: AgentConfig) -> list[str]:
    """The words of ``libvirt_tool_prefix`` (shell quoting rules; [] when unset)."""
    text = config.libvirt_tool_prefix
    if text is None:
        return []
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise AgentConfigError(
            f"cannot read the tool prefix (--libvirt-tool-prefix) {text!r}: {exc}"
        ) from None
    if not words:
        raise AgentConfigError("the tool prefix (--libvirt-tool-prefix) names no command")
    return words


def make_driver(config: AgentConfig) -> HypervisorDriver:
    validate(config)
    if config.driver == "libvirt":
        return _libvirt_driver(config)
    from bollard.agent.drivers.sim import SimDriver

    assert config.fabric_dir is not None  # checked by validate()
    try:
        return SimDriver(
            config.fabric_dir,
            config.node,
            latency=config.sim_latency,
            migration_rate=config.sim_migration_rate,
            copy_rate=config.sim_copy_rate,
            vcpus=config.vcpus,
            memory_mb=config.memory_mb,
        )
    except ValueError as exc:
        raise AgentConfigError(str(exc)) from None


def _libvirt_driver(config: AgentConfig) -> HypervisorDriver:
    from bollard.agent.drivers.libvirt import LibvirtDriver, LibvirtUnavailable

    def absolute(path: Path | None) -> str | None:
        return None if path is None else str(path.resolve())

    try:
        return LibvirtDriver(
            config.libvirt_uri,
            config.libvirt_domain_type,
            console_dir(config).resolve(),
            config.libvirt_vnc_listen,
            boot_kernel=absolute(config.libvirt_boot_kernel),
            boot_initrd=absolute(config.libvirt_boot_initrd),
            boot_cmdline=config.libvirt_boot_cmdline,
            migration_uri=config.libvirt_migration_uri,
            migration_address=config.libvirt_migration_address,
            migration_max_downtime_ms=config.libvirt_migration_max_downtime_ms,
            migration_bandwidth_mib=config.libvirt_migration_bandwidth_mib,
            jobs_dir=(config.state_dir / "libvirt-jobs").resolve(),
            image_dir=config.libvirt_image_dir,
            node=config.node,
            tool_prefix=tool_prefix(config),
            copy_bandwidth_mib=config.libvirt_copy_bandwidth_mib,
        )
    except (ValueError, LibvirtUnavailable) as exc:
        raise AgentConfigError(str(exc)) from None
