"""Messages between agents and servers (DESIGN.md section 4), JSON over WebSocket.

Every message is a JSON object with a ``type`` field. Unknown or malformed messages are
answered with an ``error`` message and never crash either side.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

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


class Heartbeat(_Msg):
    type: Literal["heartbeat"] = "heartbeat"
    seq: int  # grows across agent restarts on the same host
    sent_at: float  # host wall clock, seconds since the epoch
    vms: list[VmReport]


class AnswerError(BaseModel):
    code: str
    message: str


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


class ErrorMsg(_Msg):
    type: Literal["error"] = "error"
    code: str
    message: str


AgentMessage = Annotated[Hello | Heartbeat | Answer | Progress, Field(discriminator="type")]
ServerMessage = Annotated[Welcome | Command | ErrorMsg, Field(discriminator="type")]

agent_message: TypeAdapter[Hello | Heartbeat | Answer | Progress] = TypeAdapter(AgentMessage)
server_message: TypeAdapter[Welcome | Command | ErrorMsg] = TypeAdapter(ServerMessage)
