"""`bollard node sriov NODE` (a node's SR-IOV PFs and VFs, and who holds each VF) and
`bollard node vf set NODE PF/VF ...` (a VF's runtime settings, applied on its host by a
journaled command and re-applied by the agent at every start)."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any
from urllib.parse import quote

import typer
from rich.table import Table
from rich.text import Text

from bollard.cli.client import connect
from bollard.cli.output import OUTPUT_OPTION, Output, console, fail, name_check, print_json
from bollard.cli.wait import DEFAULT_WAIT_TIMEOUT, wait_for_task
from bollard.domain.errors import InvalidInput

NODE_ARGUMENT = typer.Argument(..., help="Node name.", callback=name_check("node"))
VF_REF = re.compile(r"(?P<pf>[^/\s]+)/(?P<vf>\d+)")
COLUMNS = ("PF", "physnet", "VF", "PCI", "netdev", "VLAN", "MAC", "trust", "link", "used by")

vf_app = typer.Typer(
    help="A node's SR-IOV virtual functions (VFs): change their settings.", no_args_is_help=True
)


class OnOff(StrEnum):
    on = "on"
    off = "off"


class LinkState(StrEnum):
    auto = "auto"
    enable = "enable"
    disable = "disable"


def register(node_app: typer.Typer) -> None:
    node_app.command("sriov")(sriov)
    node_app.add_typer(vf_app, name="vf")


def _path(node: str) -> str:
    return f"/nodes/{quote(node, safe='')}/sriov"


# --- node sriov ----------------------------------------------------------------------------


def sriov(name: str = NODE_ARGUMENT, output: Output = OUTPUT_OPTION) -> None:
    """A node's SR-IOV physical functions (PFs, from its agent's `--sriov-pf`) and their VFs:
    PCI address, network device, VLAN, MAC, trust and link state as the host reports them,
    and the VM whose NIC holds each VF ("claim pending" while the task that claimed it runs).
    A setting Bollard set that the host does not report is shown as `HOST (set WANTED)`."""
    with connect() as client:
        answer: dict[str, Any] = client.get(_path(name))
    if output is Output.json:
        print_json(answer)
        return
    pfs = answer.get("pfs") or []
    if not pfs:
        console.print(f"{name}: no SR-IOV PF (its agent reports none)", highlight=False)
        return
    for pf in pfs:
        vfs = pf.get("vfs") or []
        mtu = f", MTU {pf['mtu']}" if pf.get("mtu") else ""
        console.print(
            Text(
                f"PF {pf['device']} on {pf['physnet']} ({pf.get('pci') or 'no PCI address'}"
                f"{mtu}): {len(vfs)} VFs of {pf.get('vfs_total', 0)} possible, "
                f"{pf.get('free', 0)} free"
            ),
            soft_wrap=True,
        )
    console.print(vf_table(pfs))
    if not answer.get("connected", True):
        console.print(
            Text(f"{name} is not connected: VF settings cannot be changed until it is."),
            soft_wrap=True,
        )


def vf_table(pfs: list[dict[str, Any]]) -> Table:
    """One row per VF; plain text cells (a MAC's ":ab:" is no emoji code, "[x]" no markup)."""
    table = Table(show_edge=False, header_style="bold")
    for column in COLUMNS:
        table.add_column(column)
    for pf in pfs:
        for vf in pf.get("vfs") or []:
            cells = [
                pf["device"], pf["physnet"], str(vf["index"]), vf["pci"], vf.get("netdev"),
                setting(vf, "vlan"), setting(vf, "mac") or vf.get("mac"), setting(vf, "trust"),
                setting(vf, "link_state"), holder(vf),
            ]  # fmt: skip
            table.add_row(*(Text("-" if c is None else str(c)) for c in cells))
    return table


def _shown(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def setting(vf: dict[str, Any], key: str) -> str | None:
    """A setting as the host reports it; `HOST (set WANTED)` when Bollard set another."""
    host = _shown((vf.get("applied") or {}).get(key))
    if key in (vf.get("differs") or []):
        wanted = _shown((vf.get("settings") or {}).get(key))
        return f"{host or '-'} (set {wanted})"
    return host


def holder(vf: dict[str, Any]) -> str | None:
    used = vf.get("used_by")
    if not used:
        return None
    who = used.get("name") or used.get("uuid")
    return f"{who} (claim pending)" if vf.get("claim_pending") else str(who)


# --- node vf set ---------------------------------------------------------------------------


def parse_vf(text: str) -> tuple[str, int]:
    """`PF/VF` (ens1f0/3) -> ("ens1f0", 3)."""
    found = VF_REF.fullmatch(text)
    if found is None:
        raise typer.BadParameter(f"{text!r}: expected PF/VF, e.g. ens1f0/3")
    return found["pf"], int(found["vf"])


def _flag(value: OnOff | None) -> bool | None:
    return None if value is None else value is OnOff.on


@vf_app.command("set")
def vf_set(
    name: str = NODE_ARGUMENT,
    ref: str = typer.Argument(..., metavar="PF/VF", help="The PF's device and the VF's number."),
    vlan: int | None = typer.Option(None, "--vlan", help="VLAN id, 0 to 4094 (0: no VLAN)."),
    qos: int | None = typer.Option(None, "--qos", help="The VLAN's 802.1p priority, 0 to 7."),
    mac: str | None = typer.Option(None, "--mac", help="The VF's MAC (not of a VF a VM holds)."),
    mtu: int | None = typer.Option(None, "--mtu", help="MTU, 68 to 65535."),
    min_tx_rate: int | None = typer.Option(
        None, "--min-tx-rate", help="Guaranteed transmit rate, Mbit/s (0: none)."
    ),
    max_tx_rate: int | None = typer.Option(
        None, "--max-tx-rate", help="Transmit rate limit, Mbit/s (0: no limit)."
    ),
    spoof_check: OnOff | None = typer.Option(
        None, "--spoof-check", help="Drop frames whose source MAC is not the VF's."
    ),
    trust: OnOff | None = typer.Option(
        None, "--trust", help="Let the guest change its MAC and take multicast/promiscuous."
    ),
    link_state: LinkState | None = typer.Option(
        None, "--link-state", help="auto (follows the PF), enable or disable."
    ),
    query_rss: OnOff | None = typer.Option(
        None, "--query-rss", help="Let the guest query the RSS configuration."
    ),
    wait: bool = typer.Option(False, "--wait", help="Block until the host has applied it."),
    timeout: float = typer.Option(
        DEFAULT_WAIT_TIMEOUT, "--timeout", min=0.0, help="With --wait: give up after this."
    ),
    output: Output = OUTPUT_OPTION,
) -> None:
    """Change a VF's runtime settings (only the options given; the others stay). The change
    is a task: its host applies it with a journaled command, Bollard records it, and the
    agent re-applies it at every start (a reboot loses nothing). Needs the node's agent
    connected, and the admin role."""
    from bollard.domain.sriov import vf_settings  # pydantic models: only here (issue 24)

    pf, index = parse_vf(ref)
    values = {
        "vlan": vlan, "qos": qos, "mac": mac, "mtu": mtu, "min_tx_rate": min_tx_rate,
        "max_tx_rate": max_tx_rate, "spoof_check": _flag(spoof_check), "trust": _flag(trust),
        "link_state": None if link_state is None else link_state.value,
        "query_rss": _flag(query_rss),
    }  # fmt: skip
    try:
        change = vf_settings({k: v for k, v in values.items() if v is not None}).given()
    except InvalidInput as exc:
        fail(str(exc), code=2)
    if not change:
        fail("nothing to change: give at least one of --vlan, --qos, --mac, --mtu, "
             "--min-tx-rate, --max-tx-rate, --spoof-check, --trust, --link-state, "
             "--query-rss", code=2)  # fmt: skip
    path = f"{_path(name)}/{quote(pf, safe='')}/vfs/{index}"
    with connect() as client:
        task: dict[str, Any] = client.request("PATCH", path, json=change)
        if wait:
            task = wait_for_task(client, task, timeout=timeout)
    if output is Output.json:
        print_json(task)
        return
    what = f"{name}: PF {pf} VF {index}"
    if not wait:
        console.print(Text(f"{what}: being set; task {task['id']} "
                           f"(`bollard task wait {task['id']}`)"), soft_wrap=True)  # fmt: skip
        return
    # What the host read back of the settings changed (it reports all of them).
    applied = (task.get("result") or {}).get("applied") or {}
    shown = " ".join(f"{k.replace('_', '-')}={_shown(applied.get(k)) or '-'}" for k in change)
    console.print(Text(f"{what}: set; the host reports {shown}"), soft_wrap=True)
