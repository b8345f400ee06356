"""`bollard fleet`: many simulated hosts in one process, for scale tests and benchmarks."""

from __future__ import annotations

import logging
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from bollard.cli.client import CliError, resolve_target, resolve_tls, ssl_context
from bollard.cli.output import OUTPUT_OPTION, Output, fail, print_json

if TYPE_CHECKING:
    from bollard.fleet.runner import FleetOptions


def register(app: typer.Typer) -> None:
    app.command("fleet")(fleet)


def fleet(
    server: str | None = typer.Option(
        None,
        "--server",
        metavar="URL",
        help="Server to load (default: BOLLARD_URL, else the context `bollard up` wrote). "
        "The admin token comes from BOLLARD_TOKEN / BOLLARD_TOKEN_FILE or the context.",
    ),
    nodes: int | None = typer.Option(None, "--nodes", min=1, help="Simulated hosts to run."),
    vms_per_node: int | None = typer.Option(
        None, "--vms-per-node", min=0, help="VMs to create on each host (through the API)."
    ),
    adopt: Path | None = typer.Option(
        None,
        "--adopt",
        metavar="TOKENS_FILE",
        help="Play the hosts of nodes the server already has, with the VMs it has on them "
        "(defined, running where they should be), instead of enrolling and creating: "
        "TOKENS_FILE holds {node: token} as JSON (keep it mode 0600). For benchmarks that "
        "seed the database directly.",
    ),
    heartbeat: float | None = typer.Option(
        None,
        "--heartbeat",
        min=0.1,
        metavar="S",
        help="Seconds between the agents' heartbeats (default: the server's interval).",
    ),
    churn: float = typer.Option(
        0.0,
        "--churn",
        min=0.0,
        metavar="OPS/S",
        help="Once the VMs run, start, stop and live-migrate VMs at this steady rate.",
    ),
    prefix: str = typer.Option(
        "fleet", "--prefix", help="Node names are PREFIX-0001...; VMs PREFIX-0001-vm001..."
    ),
    vm_memory: int = typer.Option(512, "--vm-memory", min=16, metavar="MiB"),
    vm_vcpus: int = typer.Option(1, "--vm-vcpus", min=1),
    stopped: bool = typer.Option(False, "--stopped", help="Create the VMs without starting them."),
    concurrency: int = typer.Option(
        100, "--concurrency", min=1, help="API clients creating VMs at once."
    ),
    batch: int = typer.Option(
        1,
        "--batch",
        min=1,
        max=100,
        metavar="N",
        help="Each client creates N VMs of a node at once (POST /vms/batch: one transaction "
        "for the N), named NODE-bNNN-1..N; 1: one VM a request, NODE-vmNNN.",
    ),
    host_vcpus: int = typer.Option(64, "--host-vcpus", min=1),
    host_memory: int = typer.Option(262144, "--host-memory", min=1, metavar="MiB"),
    latency: float = typer.Option(
        0.0, "--latency", min=0.0, metavar="S", help="Seconds each VM operation takes on a host."
    ),
    duration: float | None = typer.Option(
        None,
        "--duration",
        min=0.0,
        metavar="S",
        help="Stop after this many seconds of steady state (default: at Ctrl-C or SIGTERM).",
    ),
    status_file: Path | None = typer.Option(
        None,
        "--status-file",
        metavar="FILE",
        help="Keep the fleet's status (phase, counts, rates, CPU, memory) in this JSON file.",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines on stderr."),
    output: Output = OUTPUT_OPTION,
) -> None:
    """Run NODES simulated hosts in this process, create their VMs, keep them heartbeating.

    Each host is a real agent session (hello, heartbeats, commands, journal, reconnects:
    the code of `bollard agent`) over its own WebSocket, with an in-memory hypervisor; the
    fleet's hosts can migrate VMs to each other. The nodes are enrolled and the VMs created
    through the API, as an operator would. A fleet's hosts exist only while it runs: when it
    stops, its nodes go disconnected and their VMs stay in the database.

    Stops at Ctrl-C, SIGTERM or after --duration; prints the final status (-o json: as JSON).
    """
    import asyncio  # here: every `bollard` command imports this module (issue 24)

    from bollard.fleet.agents import HostShape
    from bollard.fleet.runner import FleetError, FleetOptions

    url, token = resolve_target(server)
    tls = resolve_tls(url)
    ssl_context(url, tls)  # a missing or unreadable CA is a clear error here
    if adopt is None and (nodes is None or vms_per_node is None):
        raise CliError("--nodes and --vms-per-node are needed (or --adopt TOKENS_FILE)")
    if not token:
        raise CliError(
            "no admin token: set BOLLARD_TOKEN or BOLLARD_TOKEN_FILE, or run `bollard up`"
        )
    options = FleetOptions(
        server_url=url,
        token=token,
        nodes=nodes or 0,
        vms_per_node=vms_per_node or 0,
        heartbeat=heartbeat,
        churn=churn,
        prefix=prefix,
        vm_vcpus=vm_vcpus,
        vm_memory_mb=vm_memory,
        start_vms=not stopped,
        concurrency=concurrency,
        batch=batch,
        duration=duration,
        status_file=status_file,
        shape=HostShape(vcpus=host_vcpus, memory_mb=host_memory, latency=latency),
        adopt_tokens=adopt,
        ca_file=tls.ca_file,
        client_cert=Path(tls.client_cert) if tls.client_cert else None,
        client_key=Path(tls.client_key) if tls.client_key else None,
    )
    # Thousands of agents: only their warnings and errors reach the log.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    def log(message: str) -> None:
        if not quiet:
            print(f"[fleet {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    try:
        status = asyncio.run(_run(options, log))
    except FleetError as exc:
        fail(str(exc))
    if output is Output.json:
        print_json(status)
        return
    _print_summary(status)


async def _run(options: FleetOptions, log: Any) -> dict[str, Any]:
    import asyncio

    from bollard.fleet.runner import Fleet

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        return await Fleet(options, log).run(stop)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def _print_summary(status: dict[str, Any]) -> None:
    lines = [
        f"phase: {status['phase']}",
        f"nodes: {status['nodes']} ({status.get('connect_seconds', '?')}s to connect)",
        f"vms created: {status['vms_created']} ({status['vms_failed']} failed, "
        f"{status.get('create_rate', '?')}/s)",
        f"fleet process: cpu {status['process']['cpu_s']}s, rss {status['process']['rss_mb']} MB",
    ]
    if "churn" in status:
        lines.append(f"churn: {status['churn']}")
    typer.echo("\n".join(lines))
