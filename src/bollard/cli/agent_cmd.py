"""`bollard agent`: run the host agent (dials a server, heartbeats, executes commands)."""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from bollard.cli.output import fail
from bollard.domain.errors import InvalidInput

# bollard.domain.sriov (pydantic models) is imported where it is used: every `bollard`
# command imports this module, and building it costs start-up time (issue 24).
if TYPE_CHECKING:
    from bollard.domain.sriov import PfConfig


class LogLevel(StrEnum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


def sriov_pf(value: str) -> PfConfig:
    """`--sriov-pf DEVICE:VFS:PHYSNET[:MTU]` as a checked PfConfig; a bad one is a usage
    error (one line naming it) before the agent starts."""
    from bollard.domain.sriov import parse_pf

    try:
        return parse_pf(value)
    except InvalidInput as exc:
        raise typer.BadParameter(exc.message) from None


def agent(
    servers: list[str] = typer.Option(
        ...,
        "--server",
        metavar="URL",
        help="Server to dial, e.g. https://bollard.example:8700 (https needs --ca-file)."
        " Repeat it for the servers of a cluster of several: the agent dials them in turn"
        " when a connection fails or is lost, all http or all https.",
    ),
    ca_file: str | None = typer.Option(
        None,
        "--ca-file",
        metavar="FILE",
        help="The CA that signed the server's certificate (PEM), or `system` for the system's"
        " trust store; needed for an https server, whose certificate is always verified.",
    ),
    client_cert: Path | None = typer.Option(
        None,
        "--client-cert",
        metavar="FILE",
        help="Client certificate (PEM) to present, for servers run with --tls-client-ca.",
    ),
    client_key: Path | None = typer.Option(
        None, "--client-key", metavar="FILE", help="The private key of --client-cert (PEM)."
    ),
    node: str = typer.Option(
        ..., "--node", metavar="NAME", help="Name of this hypervisor host in the cluster."
    ),
    token_file: Path = typer.Option(
        ...,
        "--token-file",
        metavar="FILE",
        help="File holding this node's token (issued at enrollment). Never pass the token itself.",
    ),
    state_dir: Path = typer.Option(
        ..., "--state-dir", metavar="DIR", help="Directory for the agent's durable state."
    ),
    driver: str = typer.Option(
        "sim", "--driver", metavar="NAME", help="Hypervisor driver: sim or libvirt."
    ),
    fabric_dir: Path | None = typer.Option(
        None,
        "--fabric-dir",
        metavar="DIR",
        help="Sim fabric directory shared by all sim hosts (required with --driver sim).",
    ),
    sim_latency: float = typer.Option(
        0.2, "--sim-latency", metavar="SECONDS", min=0.0, help="Duration of each sim VM operation."
    ),
    sim_migration_rate: float = typer.Option(
        2048.0,
        "--sim-migration-rate",
        metavar="MB_PER_S",
        min=0.001,
        help="Sim migration speed: a VM migrates in memory_mb / MB_PER_S seconds "
        "(at least --sim-latency).",
    ),
    sim_copy_rate: float = typer.Option(
        2048.0,
        "--sim-copy-rate",
        metavar="MIB_PER_S",
        min=0.001,
        help="Sim volume copy speed: a copy (or a volume migration) lasts size_mb / MIB_PER_S "
        "seconds (at least --sim-latency).",
    ),
    reconnect_max: float = typer.Option(
        5.0,
        "--reconnect-max",
        metavar="SECONDS",
        min=0.2,
        help="Longest wait between two attempts to reach the server after the connection "
        "dropped (the wait starts at 0.2 s and doubles, with jitter, up to this; with several"
        " servers, it doubles once every one of them failed).",
    ),
    shutdown_wait: float = typer.Option(
        600.0,
        "--shutdown-wait",
        metavar="SECONDS",
        min=0.0,
        help="When the host shuts down cleanly (systemd, or `bollard sim node shutdown`), how "
        "long the stopping agent waits for the server to be ready (the policy migrate moves "
        "the VMs away first). Give systemd's TimeoutStopSec more than this.",
    ),
    vcpus: int = typer.Option(16, "--vcpus", min=0, help="vCPUs this host offers (sim)."),
    memory_mb: int = typer.Option(
        32768, "--memory-mb", metavar="MB", min=0, help="Memory this host offers, in MiB (sim)."
    ),
    libvirt_uri: str = typer.Option(
        "qemu:///system", "--libvirt-uri", metavar="URI", help="libvirt connection (libvirt)."
    ),
    libvirt_domain_type: str = typer.Option(
        "kvm",
        "--libvirt-domain-type",
        metavar="TYPE",
        help="kvm, or qemu (software emulation) where KVM is not usable (libvirt).",
    ),
    libvirt_console_dir: Path | None = typer.Option(
        None,
        "--libvirt-console-dir",
        metavar="DIR",
        help="Where the VMs' serial console logs go (libvirt; default STATE_DIR/consoles).",
    ),
    libvirt_image_dir: str = typer.Option(
        "/var/lib/libvirt/images/bollard",
        "--libvirt-image-dir",
        metavar="DIR",
        help="Where libvirtd keeps the VMs' disks (its 'bollard' storage pool, created if "
        "missing; libvirt). A directory local to each host, at the same path on every host: "
        "migrations copy the disks.",
    ),
    libvirt_vnc_listen: str = typer.Option(
        "127.0.0.1",
        "--libvirt-vnc-listen",
        metavar="ADDR",
        help="IP address the VMs' VNC displays listen on (libvirt).",
    ),
    libvirt_boot_kernel: Path | None = typer.Option(
        None,
        "--libvirt-boot-kernel",
        metavar="FILE",
        help="Testing/demo: boot every VM from this kernel (libvirt).",
    ),
    libvirt_boot_initrd: Path | None = typer.Option(
        None,
        "--libvirt-boot-initrd",
        metavar="FILE",
        help="Testing/demo: the initrd for --libvirt-boot-kernel.",
    ),
    libvirt_boot_cmdline: str | None = typer.Option(
        None,
        "--libvirt-boot-cmdline",
        metavar="ARGS",
        help="Testing/demo: the kernel command line for --libvirt-boot-kernel.",
    ),
    libvirt_migration_uri: str | None = typer.Option(
        None,
        "--libvirt-migration-uri",
        metavar="URI",
        help="How other hosts' libvirtd reach this host's to migrate VMs here, e.g. "
        "qemu+tls://kvm1.example/system (libvirt; without it no VM migrates to this host).",
    ),
    libvirt_migration_address: str | None = typer.Option(
        None,
        "--libvirt-migration-address",
        metavar="ADDR",
        help="Address of this host for the migration data stream (libvirt).",
    ),
    libvirt_migration_max_downtime_ms: int | None = typer.Option(
        None,
        "--libvirt-migration-max-downtime",
        metavar="MS",
        min=1,
        help="Longest pause of a live-migrating VM, in milliseconds (libvirt).",
    ),
    libvirt_migration_bandwidth_mib: int | None = typer.Option(
        None,
        "--libvirt-migration-bandwidth",
        metavar="MIB_PER_S",
        min=1,
        help="Cap on a migration's transfer rate, in MiB/s (libvirt).",
    ),
    libvirt_tool_prefix: str | None = typer.Option(
        None,
        "--libvirt-tool-prefix",
        metavar="COMMAND",
        help="Run qemu-img (snapshots, checksums, copies within a host) through this command "
        "line, e.g. 'nsenter --mount=/proc/PID/ns/mnt --' where libvirtd runs in a mount "
        "namespace of its own and the agent does not see its files (libvirt; not needed on "
        "a real host).",
    ),
    libvirt_copy_bandwidth_mib: float | None = typer.Option(
        None,
        "--libvirt-copy-bandwidth-mib",
        metavar="MIB_PER_S",
        help="Cap on the rate of volume copies and live moves of disks, in MiB/s (libvirt; "
        "default: as fast as they go).",
    ),
    # Each a PfConfig (made by the parser; Typer reads this annotation when it makes the
    # command, also for `bollard --help`, so it names no type of bollard.domain.sriov).
    sriov_pfs: list[Any] | None = typer.Option(
        None,
        "--sriov-pf",
        metavar="DEVICE:VFS:PHYSNET[:MTU]",
        parser=sriov_pf,
        help="An SR-IOV physical function (repeatable): its network device, how many VFs it "
        "gets, the physical network it is cabled to (what `vm create --nic sriov=PHYSNET` "
        "names) and the VFs' MTU. At every start the agent sets the VF count, finds the VFs "
        "and re-applies every VF setting made with `bollard node vf set`; a PF it cannot set "
        "up (no such device, more VFs than it supports) is logged and left out. With the sim "
        "driver the NIC is simulated (64 VFs a PF).",
    ),
    sriov_sysfs: Path = typer.Option(
        Path("/sys"),
        "--sriov-sysfs",
        metavar="DIR",
        help="Where sysfs is, for --sriov-pf with the libvirt driver (testing: a fake tree).",
    ),
    log_level: LogLevel = typer.Option(
        LogLevel.INFO, "--log-level", case_sensitive=False, help="Logging threshold (stderr)."
    ),
) -> None:
    """Run the agent of one hypervisor host (see AGENT_HELP)."""
    from bollard.agent.config import AgentConfig, AgentConfigError, read_token, validate
    from bollard.agent.process import run_agent

    config = AgentConfig(
        server_url=servers[0],
        extra_server_urls=tuple(servers[1:]),
        node=node,
        token_file=token_file,
        state_dir=state_dir,
        driver=driver,
        fabric_dir=fabric_dir,
        sim_latency=sim_latency,
        sim_migration_rate=sim_migration_rate,
        sim_copy_rate=sim_copy_rate,
        backoff_max=reconnect_max,
        shutdown_wait=shutdown_wait,
        vcpus=vcpus,
        memory_mb=memory_mb,
        libvirt_uri=libvirt_uri,
        libvirt_domain_type=libvirt_domain_type,
        libvirt_console_dir=libvirt_console_dir,
        libvirt_image_dir=libvirt_image_dir,
        libvirt_vnc_listen=libvirt_vnc_listen,
        libvirt_boot_kernel=libvirt_boot_kernel,
        libvirt_boot_initrd=libvirt_boot_initrd,
        libvirt_boot_cmdline=libvirt_boot_cmdline,
        libvirt_migration_uri=libvirt_migration_uri,
        libvirt_migration_address=libvirt_migration_address,
        libvirt_migration_max_downtime_ms=libvirt_migration_max_downtime_ms,
        libvirt_migration_bandwidth_mib=libvirt_migration_bandwidth_mib,
        libvirt_tool_prefix=libvirt_tool_prefix,
        libvirt_copy_bandwidth_mib=libvirt_copy_bandwidth_mib,
        log_level=log_level.value,
        ca_file=ca_file,
        client_cert=client_cert,
        client_key=client_key,
        sriov_pfs=tuple(sriov_pfs or ()),
        sriov_sysfs=sriov_sysfs,
    )
    try:
        validate(config)
        read_token(token_file)
        os.umask(0o077)  # its state dir (journal, sequence) and logs are the agent's only
        run_agent(config)
    except AgentConfigError as exc:
        fail(str(exc))


AGENT_HELP = (
    "Run the agent of one hypervisor host.\n\n"
    "The agent dials the server over WebSocket, registers the host, sends heartbeats with "
    "the state of its VMs and executes the server's commands through the hypervisor driver. "
    "Every command is journaled durably in STATE_DIR/journal before it is acted on, so a "
    "command delivered twice runs once and a lost answer reaches the server with the next "
    "heartbeat. It reconnects on its own when the connection drops, and stops cleanly on "
    "SIGTERM or Ctrl-C (exit status 0).\n\n"
    "Several servers (--server repeated, or those a server names when it welcomes the "
    "agent): the agent holds one connection, to one server. When it cannot connect or "
    "loses its connection it dials the next address, the configured ones first in their "
    "order, then those the servers named; it waits longer (up to --reconnect-max) only "
    "after every address failed.\n\n"
    "With an https server URL the agent dials wss:// and verifies the server's certificate "
    "with --ca-file (never without); --client-cert/--client-key for servers that require "
    "client certificates.\n\n"
    "Drivers: sim (simulated hosts sharing --fabric-dir) and libvirt (QEMU/KVM through "
    "libvirt-python, installed with pip install 'bollard[libvirt]'; --libvirt-* options).\n\n"
    "SR-IOV: each --sriov-pf is set up at start (VF count, MTU) and reported to the server "
    "with its VFs; VF settings changed through the server are journaled commands, recorded in "
    "STATE_DIR/sriov.json and applied again at every start, so a reboot loses none."
)


def register(app: typer.Typer) -> None:
    """Add the `agent` command to the main CLI app."""
    app.command("agent", help=AGENT_HELP)(agent)
