"""Request and response bodies of the REST API about nodes: a node, its allocations, its
power (fencing) settings, its enrolment (these also make the OpenAPI document)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from bollard.domain.ha import ShutdownKind, ShutdownPolicy
from bollard.domain.models import Node
from bollard.domain.states import NodeHealth, SchedulingState
from bollard.server.api.params import Text
from bollard.server.api.schemas import Name


class Resources(BaseModel):
    vcpus: int
    memory_mb: int


class AllocationOut(BaseModel):
    consumer: Literal["vm", "migration"] = Field(
        description="vm: a VM the node owns; migration: a resize's hold on its source (the "
        "old size, kept until the resize is confirmed or reverted)."
    )
    vm: str
    migration_id: str | None = None
    vcpus: int
    memory_mb: int


class NodeOut(BaseModel):
    name: str
    health: NodeHealth
    connected: bool
    scheduling: SchedulingState
    capacity: Resources
    allocated: Resources
    free: Resources
    vm_count: int
    last_heartbeat: datetime | None
    last_seq: int = Field(default=0, description="Sequence number of the last report stored.")
    report_host_time: float | None = Field(
        default=None, description="The host's clock at that report (seconds since the epoch)."
    )
    inventory_known: bool = Field(
        default=False,
        description="Whether the node's VM inventory is current (its agent session has sent "
        "a full report); the state reconciler only judges nodes whose inventory is.",
    )
    agent_incarnation: str | None
    boot_id: str | None
    driver: str | None
    load: float | None
    health_since: datetime | None
    power: PowerOut
    maintenance: bool = Field(
        default=False, description="Per-node maintenance: drained, and never fenced while on."
    )
    shutdown_policy: ShutdownPolicy | None = Field(
        default=None,
        description="What a clean shutdown or reboot of its host does: freeze, failover, "
        "migrate or conditional (null: the setting ha.shutdown_policy).",
    )
    shutdown_policy_effective: ShutdownPolicy | None = Field(
        default=None, description="Its own policy, else the setting ha.shutdown_policy."
    )
    shutdown_kind: ShutdownKind | None = Field(
        default=None,
        description="The clean shutdown its agent announced (poweroff or reboot), until the "
        "agent is back.",
    )
    shutdown_at: datetime | None = Field(default=None, description="When it was announced.")
    created_at: datetime
    allocations: list[AllocationOut] | None = Field(
        default=None,
        description="What holds its resources (single-node reads only): the VMs it owns and "
        "the resizes whose old copy it keeps.",
    )

    @classmethod
    def of(cls, n: Node, *, shutdown_default: str | None = None) -> NodeOut:
        """``shutdown_default``: the setting ha.shutdown_policy (the effective policy of a
        node without its own; left null when not given)."""
        return cls(
            name=n.name,
            health=n.health,
            connected=n.connected,
            scheduling=n.scheduling,
            capacity=Resources(vcpus=n.vcpus, memory_mb=n.memory_mb),
            allocated=Resources(vcpus=n.allocated_vcpus, memory_mb=n.allocated_memory_mb),
            free=Resources(
                vcpus=n.vcpus - n.allocated_vcpus, memory_mb=n.memory_mb - n.allocated_memory_mb
            ),
            vm_count=n.vm_count,
            last_heartbeat=n.last_heartbeat,
            last_seq=n.last_seq,
            report_host_time=n.report_host_time,
            inventory_known=n.inventory_known,
            agent_incarnation=n.agent_incarnation,
            boot_id=n.boot_id,
            driver=n.driver,
            load=n.load,
            health_since=n.health_since,
            power=PowerOut(
                driver=n.power_driver,
                address=n.power_address,
                credentials=n.has_power_credentials,
            ),
            maintenance=n.maintenance,
            shutdown_policy=n.shutdown_policy,
            shutdown_policy_effective=n.shutdown_policy or shutdown_default,
            shutdown_kind=n.shutdown_kind,
            shutdown_at=n.shutdown_at,
            created_at=n.created_at,
        )


class PowerOut(BaseModel):
    driver: str | None
    address: str | None
    credentials: bool = Field(description="Whether credentials are stored (never shown).")


class PowerSettings(BaseModel):
    driver: Literal["sim", "ipmi", "redfish"] | None = Field(
        default=None, description="Power (fencing) driver; null removes it."
    )
    address: Text | None = Field(default=None, max_length=255)
    username: Text | None = Field(default=None, max_length=255)
    password: Text | None = Field(default=None, max_length=1024, repr=False)
    store_untested: bool = Field(
        default=False,
        description="The driver is tested before it is stored, and a failed test stores "
        "nothing (422 power-test-failed); true stores it anyway, marked not verified.",
    )


class NodeCreate(BaseModel):
    name: Name
    power: PowerSettings | None = None


class NodeCreated(BaseModel):
    node: NodeOut
    token: str = Field(description="The agent's token. Shown once; store it in a 0600 file.")


class NodePage(BaseModel):
    items: list[NodeOut]
    next_cursor: str | None
    total: int
