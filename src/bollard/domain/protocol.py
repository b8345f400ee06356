"""Messages between agents and servers (DESIGN.md section 4), JSON over WebSocket.

Every message is a JSON object with a ``type`` field. Unknown or malformed messages are
answered with an ``error`` message and never crash either side.

The models are the boundary: every value an agent sends is checked here, before any of it
reaches the database or a handler. Integers are within the range of the column that stores
them (64-bit sequence numbers; 32-bit counts, sizes and epochs), never negative where that
means nothing; floats are finite; strings no longer than the columns that hold them; lists
and free-form objects bounded (and free of NaN, out-of-range integers and NUL characters,
which PostgreSQL refuses). A frame is at most ``MAX_AGENT_MESSAGE`` bytes.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    model_validator,
)

from bollard.domain.commands import AgentCommandState
from bollard.domain.errors import InvalidInput
from bollard.domain.ha import ShutdownKind
from bollard.domain.sriov import MAX_VFS, PCI_ADDRESS, SriovPf, check_device, check_physnet
from bollard.domain.states import CommandType, PowerState

AGENT_PATH = "/api/v1/agent/ws"
# Where an agent dials to carry one console tunnel (see TunnelOpen), next to AGENT_PATH so that
# whatever forwards the agents' sessions to the server forwards their tunnels too.
AGENT_TUNNEL_PATH = "/api/v1/agent/tunnel/{tunnel}"
# The agent protocol's versions. A version changes when a message's meaning does (a field
# added with a default that older peers ignore needs none). The agent offers every version it
# speaks in its hello; the server chooses the newest both speak and says so in its welcome,
# so agents and servers of two consecutive releases talk during a rolling upgrade.
PROTOCOL_VERSION = 1  # the newest this release speaks
AGENT_PROTOCOLS: tuple[int, ...] = (PROTOCOL_VERSION,)  # every one its agent speaks
MAX_OFFERED_PROTOCOLS = 16

# The largest frame an agent may send (bytes). A full report of a host is its biggest
# message: about 130 bytes a VM, so 4 MiB carries more than 25,000 VMs (the benchmarks'
# largest host has 100) with a full batch of journal entries.
MAX_AGENT_MESSAGE = 4 * 1024 * 1024
MAX_VMS_PER_REPORT = 20_000  # VMs in one report (full or delta), and uuids gone
MAX_JOURNAL_PER_REPORT = 1024  # journal entries in one heartbeat (agents send 256 at most)
MAX_JSON_DEPTH = 32  # nesting of free-form objects (results, endpoints)

INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1

Seq = Annotated[int, Field(ge=0, le=INT64_MAX)]  # report sequence numbers (BIGINT)
Count = Annotated[int, Field(ge=0, le=INT32_MAX)]  # counts, sizes, epochs (INTEGER)
Finite = Annotated[float, Field(allow_inf_nan=False)]


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("holds a NUL character")
    return value


NoNul = AfterValidator(_no_nul)
Uuid = Annotated[str, StringConstraints(max_length=36), NoNul]
Ident = Annotated[str, StringConstraints(max_length=64), NoNul]  # incarnation and boot ids
# Ids the server issued (commands, queries): only looked up, never stored from a message.
Ref = Annotated[str, StringConstraints(max_length=1024), NoNul]
Name = Annotated[str, StringConstraints(max_length=63), NoNul]  # node and VM names
Code = Annotated[str, StringConstraints(max_length=64), NoNul]  # error codes, versions
Text = Annotated[str, StringConstraints(max_length=65_536), NoNul]  # messages, notes
# A console tunnel's id: random, URL-safe (it is a path segment of AGENT_TUNNEL_PATH).
TunnelId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{16,64}$")]
# Why a tunnel was refused, for the person at the console: one short line (a WebSocket close
# reason carries at most 123 bytes; the server shortens longer ones).
Reason = Annotated[str, StringConstraints(max_length=200), NoNul]


def _json_safe(value: dict[str, Any]) -> dict[str, Any]:
    """A free-form object the server may store and show: finite floats, 64-bit integers,
    bounded nesting, no NUL characters (JSON columns and responses refuse them)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise ValueError(f"is nested deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(item, dict):
            for key, sub in item.items():
                if "\x00" in key:
                    raise ValueError("holds a key with a NUL character")
                stack.append((sub, depth + 1))
        elif isinstance(item, list):
            stack.extend((sub, depth + 1) for sub in item)
        elif isinstance(item, str):
            if "\x00" in item:
                raise ValueError("holds a string with a NUL character")
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if not -INT64_MAX - 1 <= item <= INT64_MAX:
                raise ValueError("holds an integer outside the 64-bit range")
        elif isinstance(item, float) and not math.isfinite(item):
            raise ValueError("holds a number that is not finite (NaN or infinity)")
    return value


JsonObject = Annotated[dict[str, Any], AfterValidator(_json_safe)]

MAX_SRIOV_PFS = 16  # PFs in one hello: 16 PFs of 256 VFs each make about 1.5 MiB of JSON
_PCI_LIMIT = 65_535  # the most functions (and so VFs) a PCI device can have


def _sriov_safe(pfs: list[SriovPf]) -> list[SriovPf]:
    """An agent's SR-IOV report the store can hold: names and PCI addresses in their patterns
    (the columns' lengths), at most MAX_VFS VFs a PF, integers in the columns' range, the
    user a VM uuid. What the settings mean is not checked here: they are what the host
    reports, and a setting made out of band must not keep the node from registering."""
    for pf in pfs:
        try:
            check_device(pf.device)
            check_physnet(pf.physnet)
        except InvalidInput as exc:
            raise ValueError(exc.message) from None
        if pf.pci and not PCI_ADDRESS.fullmatch(pf.pci):
            raise ValueError(f"PF {pf.device}: PCI address {pf.pci!r} not valid")
        if len(pf.vfs) > MAX_VFS or not 0 <= pf.vfs_total <= _PCI_LIMIT:
            raise ValueError(f"PF {pf.device}: more VFs than a PF may have")
        numbers = [pf.mtu] + [
            value for vf in pf.vfs for value in (vf.index, *vf.settings.given().values())
        ]
        if any(isinstance(n, int) and not 0 <= n <= INT32_MAX for n in numbers):
            raise ValueError(f"PF {pf.device}: a number outside the 32-bit range")
        for vf in pf.vfs:
            where = f"PF {pf.device} VF {vf.index}"
            if not PCI_ADDRESS.fullmatch(vf.pci):
                raise ValueError(f"{where}: PCI address {vf.pci!r} not valid")
            if vf.netdev is not None:
                try:
                    check_device(vf.netdev)
                except InvalidInput as exc:
                    raise ValueError(f"{where}: {exc.message}") from None
            if vf.used_by is not None and (len(vf.used_by) > 36 or "\x00" in vf.used_by):
                raise ValueError(f"{where}: used_by is not a VM uuid")
            if vf.settings.mac is not None and not _MAC_TEXT.fullmatch(vf.settings.mac):
                raise ValueError(f"{where}: MAC {vf.settings.mac!r} not valid")
    return pfs


_MAC_TEXT = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}")

# An agent's SR-IOV report (hello and heartbeats): its PFs with their VFs.
SriovReport = Annotated[list[SriovPf], Field(max_length=MAX_SRIOV_PFS), AfterValidator(_sriov_safe)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


class _Msg(_Model):
    pass


class Capacity(_Model):
    vcpus: Count
    memory_mb: Count


class VmReport(_Model):
    """One VM as the host sees it."""

    uuid: Uuid
    name: Name
    power: PowerState
    vcpus: Count
    memory_mb: Count
    epoch: Count = 0


class AnswerError(_Model):
    code: Code
    message: Text


class JournalEntry(_Model):
    """A command as the agent's journal holds it."""

    command_id: Ref
    command: CommandType | None = None  # None for a tombstone (see Query)
    vm_uuid: Uuid | None = None
    epoch: Count = 0
    state: AgentCommandState
    ok: bool | None = None  # set once COMPLETED (True) or FAILED (False)
    result: JsonObject = Field(default_factory=dict)
    error: AnswerError | None = None
    received_at: Finite  # agent wall clock
    updated_at: Finite
    note: Text = ""  # e.g. why it was interrupted, or "cancel hook aborted the migration"


# agent -> server


class Hello(_Msg):
    type: Literal["hello"] = "hello"
    node: Name
    incarnation: Ident  # new for every agent process start
    boot_id: Ident  # changes when the host reboots
    driver: Annotated[str, StringConstraints(max_length=40), NoNul]
    # The oldest version this agent speaks (all a server before negotiation reads), and every
    # one it speaks (empty from agents before negotiation: `protocol` only).
    protocol: Count = PROTOCOL_VERSION
    protocols: Annotated[list[Count], Field(max_length=MAX_OFFERED_PROTOCOLS)] = Field(
        default_factory=list
    )
    capacity: Capacity
    agent_version: Code = ""
    # What peers need to migrate VMs to this host (e.g. the hypervisor's URI and the
    # address for the data stream); None when the driver does not migrate between hosts.
    migration_endpoint: JsonObject | None = None
    journal_entries: Count = 0  # how many entries the journal holds
    corrupt_entries: Count = 0  # torn or unreadable entries set aside at start
    # Set when the agent dials again while its host's clean shutdown is under way (it sent
    # HostShutdown and waits for HostShutdownReady): the server keeps the shutdown recorded.
    shutting_down: ShutdownKind | None = None
    # The host's SR-IOV PFs with their VFs (issue 22): what the agent set up at its start,
    # each VF with its settings as read back and the VM whose definition uses it. None: an
    # agent that does not report SR-IOV (the server leaves the node's records as they are);
    # []: no PF configured (the server drops the node's records).
    sriov: SriovReport | None = None


def offered_protocols(hello: Hello) -> set[int]:
    """The protocol versions an agent's hello offers."""
    return {hello.protocol, *hello.protocols}


class Heartbeat(_Msg):
    """The host's state report. The first of a session (and the one after a ``resync``) is
    full: ``vms`` lists every VM. The others carry what changed since the previous one
    (``vms``: new or changed entries, ``gone``: uuids no longer there) and the digest of the
    whole inventory (bollard.domain.inventory), so a report that changes nothing is O(1).
    A uuid appears at most once in ``vms`` and ``gone`` together."""

    type: Literal["heartbeat"] = "heartbeat"
    seq: Seq  # grows across agent restarts on the same host
    sent_at: Finite  # host wall clock, seconds since the epoch
    vms: Annotated[list[VmReport], Field(max_length=MAX_VMS_PER_REPORT)]
    full: bool = True
    gone: Annotated[list[Uuid], Field(max_length=MAX_VMS_PER_REPORT)] = Field(default_factory=list)
    digest: Code | None = None
    # Journal entries changed since the server's last ack; sent until acknowledged.
    journal: Annotated[list[JournalEntry], Field(max_length=MAX_JOURNAL_PER_REPORT)] = Field(
        default_factory=list
    )
    # Host load: runnable work per CPU (1.0 = every CPU busy); None if not measured.
    load: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] | None = None
    # The host's SR-IOV PFs as in the hello, each VF with the VM whose definition uses it
    # now: in every full report of an agent that reports SR-IOV, and in a delta report when
    # they changed since the session's previous report. None: unchanged (or no SR-IOV);
    # the server keeps what it has.
    sriov: SriovReport | None = None

    @model_validator(mode="after")
    def _each_vm_once(self) -> Heartbeat:
        seen: set[str] = set()
        for uuid in [vm.uuid for vm in self.vms] + self.gone:
            if uuid in seen:
                raise ValueError(f"VM {uuid!r} appears more than once in the report")
            seen.add(uuid)
        return self


class Answer(_Msg):
    type: Literal["answer"] = "answer"
    command_id: Ref
    ok: bool
    result: JsonObject = Field(default_factory=dict)
    error: AnswerError | None = None


class Progress(_Msg):
    type: Literal["progress"] = "progress"
    command_id: Ref
    fraction: float = Field(ge=0.0, le=1.0, allow_inf_nan=False)
    message: Text = ""


class QueryResult(_Msg):
    """The agent's answer to a reconciler's Query: its journal entry (None if it never
    received the command) and the live state of the VM the command concerns."""

    type: Literal["query_result"] = "query_result"
    query_id: Ref
    command_id: Ref
    entry: JournalEntry | None
    vm: VmReport | None = None  # None: the host does not have the VM (or no VM concerned)


class InspectResult(_Msg):
    """The agent's answer to an Inspect: the live state of one VM on this host (None: the host
    does not have it), and whether a backend job (e.g. a migration) for it is running."""

    type: Literal["inspect_result"] = "inspect_result"
    query_id: Ref
    vm_uuid: Uuid
    vm: VmReport | None = None
    job_running: bool = False
    # Asked for with Inspect.console_lines > 0, from drivers that have a console
    # (None: the driver has none): the tail of the serial console log, and how to reach
    # the VM's display (e.g. {"type": "vnc", "listen": "127.0.0.1", "port": 5901}).
    console: str | None = None
    display: JsonObject | None = None
    # Asked for with Inspect.disks, from drivers that list a VM's disks (None: not asked, or
    # the driver cannot): each {"device", "path", "size_mb"}, as the hypervisor has them now.
    disks: Annotated[list[JsonObject], Field(max_length=64)] | None = None


MAX_POOLS_PER_QUERY = 256
MAX_VOLUMES_PER_POOL = 100_000
PoolName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
FileName = Annotated[str, StringConstraints(max_length=128), NoNul]


class PoolSpec(_Model):
    """A pool as the server defines it (drivers/storage.py PoolRef)."""

    name: PoolName
    type: Literal["local", "shared"]
    path: Annotated[str, StringConstraints(max_length=1024), NoNul] = ""


class VolumeFileReport(_Model):
    file: FileName
    format: Annotated[str, StringConstraints(max_length=16), NoNul]
    size_mb: Seq
    allocated_mb: Seq
    partial: bool = False  # the target of a copy still running (or left by one)


class PoolReport(_Model):
    """One pool as the host sees it: its room, and (when asked) its volume files."""

    name: PoolName
    ok: bool
    error: Text = ""
    capacity_mb: Seq = 0
    free_mb: Seq = 0
    volumes: Annotated[list[VolumeFileReport], Field(max_length=MAX_VOLUMES_PER_POOL)] | None = None


class StorageReport(_Msg):
    """The agent's answer to a StorageQuery."""

    type: Literal["storage_report"] = "storage_report"
    query_id: Ref
    pools: Annotated[list[PoolReport], Field(max_length=MAX_POOLS_PER_QUERY)]


class TunnelRefused(_Msg):
    """The agent's answer to a TunnelOpen it cannot serve (instead of dialling the tunnel):
    e.g. the driver has no graphical console, the VM is not here or not running, or its
    display refused the connection."""

    type: Literal["tunnel_refused"] = "tunnel_refused"
    tunnel: TunnelId
    reason: Reason


class HostShutdown(_Msg):
    """The host is shutting down cleanly (``kind``: poweroff or reboot); sent by the agent when
    it is stopped as part of it. The server records it and applies the node's shutdown policy
    (bollard.domain.ha), then answers HostShutdownReady; the agent exits after that answer (or
    its deadline). Sent again after a reconnect until the answer came."""

    type: Literal["host_shutdown"] = "host_shutdown"
    kind: ShutdownKind


# server -> agent


class HostShutdownReady(_Msg):
    """The server's answer to HostShutdown: the agent may exit now. For the policy migrate it
    comes once the node's VMs moved away (``ok`` false: the drain failed or could not start,
    ``message`` says why); for the others at once. ``action``: freeze, failover or migrate."""

    type: Literal["host_shutdown_ready"] = "host_shutdown_ready"
    ok: bool
    action: str = ""
    message: str = ""


MAX_WELCOME_SERVERS = 64
ServerUrl = Annotated[str, StringConstraints(max_length=255), NoNul]


class Welcome(_Msg):
    """``servers``: the URLs of the live servers, which the agent dials in turn after its
    configured ones when it loses its server (empty from servers that do not tell).
    ``protocol``: the version chosen (see PROTOCOL_VERSION)."""

    type: Literal["welcome"] = "welcome"
    heartbeat_interval: float
    server_time: float
    servers: Annotated[list[ServerUrl], Field(max_length=MAX_WELCOME_SERVERS)] = Field(
        default_factory=list
    )
    # The protocol version the session speaks: the newest of the hello's that the server
    # speaks (None from servers before negotiation: the hello's `protocol`).
    protocol: Count | None = None


class Command(_Msg):
    type: Literal["command"] = "command"
    id: str
    command: CommandType
    args: dict[str, Any] = Field(default_factory=dict)
    vm_uuid: str | None = None
    epoch: int = 0
    timeout: float  # seconds the agent may take before the server gives up


class Ack(_Msg):
    """The server has stored these journal entries (at these states); finished ones may be
    pruned by the agent."""

    type: Literal["ack"] = "ack"
    entries: dict[str, AgentCommandState]


class Cancel(_Msg):
    type: Literal["cancel"] = "cancel"
    command_id: str


class Query(_Msg):
    """Asked by the command reconciler: what became of this command?

    If the journal has no entry for it, the agent records a tombstone (FAILED, "never
    received") before answering, so the command can never run later if it arrives late."""

    type: Literal["query"] = "query"
    query_id: str
    command_id: str
    vm_uuid: str | None = None


class Inspect(_Msg):
    """Where is this VM? Asked of every host concerned when a migration's outcome is unknown.
    Read-only: it changes nothing on the host and writes nothing to the journal."""

    type: Literal["inspect"] = "inspect"
    query_id: str
    vm_uuid: str
    console_lines: int = Field(default=0, ge=0, le=10_000)  # > 0: also the console's tail
    disks: bool = False  # also the VM's disks (which file each device really uses)


class Resync(_Msg):
    """The server's copy of the host's inventory no longer matches the digest (or it has
    none): the next heartbeat must be a full report."""

    type: Literal["resync"] = "resync"
    reason: str = ""


class TunnelOpen(_Msg):
    """Open a byte tunnel to a VM's display on this host. The agent asks its driver where the
    display listens (on the host only), connects to it, then dials AGENT_TUNNEL_PATH with
    ``tunnel`` (authenticated with the node's token, as its session) and relays bytes both
    ways as binary frames; or it answers TunnelRefused. Single use: the server pairs the
    first connection with this id and refuses any other. ``server``: the server to dial, when
    it is not the one holding this session (several servers: the one whose client asked;
    an agent that does not know the field dials its own, which refuses the tunnel)."""

    type: Literal["tunnel_open"] = "tunnel_open"
    tunnel: TunnelId
    vm_uuid: Uuid
    kind: Literal["vnc"] = "vnc"
    server: ServerUrl | None = None


class StorageQuery(_Msg):
    """What do these pools hold on this host? Asked by the storage monitor (room) and by the
    reconcilers and tasks that must see where a volume's copies are (``volumes``: list each
    pool's files too). Read-only: nothing is journaled."""

    type: Literal["storage_query"] = "storage_query"
    query_id: str
    pools: Annotated[list[PoolSpec], Field(max_length=MAX_POOLS_PER_QUERY)]
    volumes: bool = False


class ErrorMsg(_Msg):
    type: Literal["error"] = "error"
    code: str
    message: str


AgentMessageT = (
    Hello
    | Heartbeat
    | Answer
    | Progress
    | QueryResult
    | InspectResult
    | TunnelRefused
    | StorageReport
    | HostShutdown
)
ServerMessageT = (
    Welcome
    | Command
    | Ack
    | Cancel
    | Query
    | Inspect
    | Resync
    | TunnelOpen
    | StorageQuery
    | HostShutdownReady
    | ErrorMsg
)
AgentMessage = Annotated[AgentMessageT, Field(discriminator="type")]
ServerMessage = Annotated[ServerMessageT, Field(discriminator="type")]

agent_message: TypeAdapter[AgentMessageT] = TypeAdapter(AgentMessage)
server_message: TypeAdapter[ServerMessageT] = TypeAdapter(ServerMessage)
