"""Messages between agents and servers (DESIGN.md section 4), JSON over WebSocket.

Every message is a JSON object with a ``type`` field. Unknown or malformed messages are
answered with an ``error`` message and never crash either side.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from bollard.domain.commands import AgentCommandState
from bollard.domain.states import CommandType, PowerState

AGENT_PATH = "/api/v1/agent/ws"
PROTOCOL_VERSION = 1


class _Msg(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Capacity(BaseModel):
    vcpus: int = Field(ge=0)
    memory_mb: int = Field(ge=0)


class VmReport(BaseModel):
    """One VM as the host sees it."""

    uuid: str
    name: str
    power: PowerState
    vcpus: int
    memory_mb: int
    epoch: int = 0


class AnswerError(BaseModel):
    code: str
    message: str


class JournalEntry(BaseModel):
    """A command as the agent's journal holds it."""

    command_id: str
    command: CommandType | None = None  # None for a tombstone (see Query)
    vm_uuid: str | None = None
    epoch: int = 0
    state: AgentCommandState
    ok: bool | None = None  # set once COMPLETED (True) or FAILED (False)
    result: dict[str, Any] = Field(default_factory=dict)
    error: AnswerError | None = None
    received_at: float  # agent wall clock
    updated_at: float
    note: str = ""  # e.g. why it was interrupted, or "cancel hook aborted the migration"


# agent -> server


class Hello(_Msg):
    type: Literal["hello"] = "hello"
    node: str
    incarnation: str  # new for every agent process start
    boot_id: str  # changes when the host reboots
    driver: str
    protocol: int = PROTOCOL_VERSION
    capacity: Capacity
    agent_version: str = ""
    # What peers need to migrate VMs to this host (e.g. the hypervisor's URI and the
    # address for the data stream); None when the driver does not migrate between hosts.
    migration_endpoint: dict[str, Any] | None = None
    journal_entries: int = 0  # how many entries the journal holds
    corrupt_entries: int = 0  # torn or unreadable entries set aside at start


class Heartbeat(_Msg):
    """The host's state report. The first of a session (and the one after a ``resync``) is
    full: ``vms`` lists every VM. The others carry what changed since the previous one
    (``vms``: new or changed entries, ``gone``: uuids no longer there) and the digest of the
    whole inventory (bollard.domain.inventory), so a report that changes nothing is O(1)."""

    type: Literal["heartbeat"] = "heartbeat"
    seq: int  # grows across agent restarts on the same host
    sent_at: float  # host wall clock, seconds since the epoch
    vms: list[VmReport]
    full: bool = True
    gone: list[str] = Field(default_factory=list)
    digest: str | None = None
    # Journal entries changed since the server's last ack; sent until acknowledged.
    journal: list[JournalEntry] = Field(default_factory=list)
    # Host load: runnable work per CPU (1.0 = every CPU busy); None if not measured.
    load: float | None = None


class Answer(_Msg):
    type: Literal["answer"] = "answer"
    command_id: str
    ok: bool
    result: dict[str, Any] = Field(default_factory=dict)
    error: AnswerError | None = None


class Progress(_Msg):
    type: Literal["progress"] = "progress"
    command_id: str
    fraction: float = Field(ge=0.0, le=1.0)
    message: str = ""


class QueryResult(_Msg):
    """The agent's answer to a reconciler's Query: its journal entry (None if it never
    received the command) and the live state of the VM the command concerns."""

    type: Literal["query_result"] = "query_result"
    query_id: str
    command_id: str
    entry: JournalEntry | None
    vm: VmReport | None = None  # None: the host does not have the VM (or no VM concerned)


class InspectResult(_Msg):
    """The agent's answer to an Inspect: the live state of one VM on this host (None: the host
    does not have it), and whether a backend job (e.g. a migration) for it is running."""

    type: Literal["inspect_result"] = "inspect_result"
    query_id: str
    vm_uuid: str
    vm: VmReport | None = None
    job_running: bool = False
    # Asked for with Inspect.console_lines > 0, from drivers that have a console
    # (None: the driver has none): the tail of the serial console log, and how to reach
    # the VM's display (e.g. {"type": "vnc", "listen": "127.0.0.1", "port": 5901}).
    console: str | None = None
    display: dict[str, Any] | None = None


# server -> agent


class Welcome(_Msg):
    type: Literal["welcome"] = "welcome"
    heartbeat_interval: float
    server_time: float


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


class Resync(_Msg):
    """The server's copy of the host's inventory no longer matches the digest (or it has
    none): the next heartbeat must be a full report."""

    type: Literal["resync"] = "resync"
    reason: str = ""


class ErrorMsg(_Msg):
    type: Literal["error"] = "error"
    code: str
    message: str


AgentMessageT = Hello | Heartbeat | Answer | Progress | QueryResult | InspectResult
ServerMessageT = Welcome | Command | Ack | Cancel | Query | Inspect | Resync | ErrorMsg
AgentMessage = Annotated[AgentMessageT, Field(discriminator="type")]
ServerMessage = Annotated[ServerMessageT, Field(discriminator="type")]

agent_message: TypeAdapter[AgentMessageT] = TypeAdapter(AgentMessage)
server_message: TypeAdapter[ServerMessageT] = TypeAdapter(ServerMessage)
