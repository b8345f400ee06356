"""Bodies of /api/v1/ha: HA groups (nodes with priorities) and affinity rules between VMs
(domain/ha.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from bollard.domain.ha import AffinityKind, AffinityRule, HaGroup
from bollard.server.api.params import NAME_PATTERN, Text

HaName = Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=NAME_PATTERN)]
Priority = Annotated[int, Field(ge=-1000, le=1000)]
Description = Annotated[Text, StringConstraints(max_length=200)]
Kind = Literal["together", "apart"]

MAX_GROUP_NODES = 1000
MAX_RULE_VMS = 1000

GROUP_NODES = (
    "The group's nodes with their priorities (higher first; -1000..1000): a VM of the "
    "group runs on the highest-priority node that is available. On a change, the group's "
    "nodes become these."
)
RESTRICTED = (
    "The group's VMs never run outside it: when none of its nodes can take a VM, it waits "
    "(not restricted: then any other node may)."
)
NOFAILBACK = (
    "Do not move a VM back when a node of higher priority than its own becomes available "
    "again (default false: it is migrated back, live)."
)
RULE_VMS = "The VMs the rule holds, by name (at least 2); on a change, the rule's VMs become these."
STRICT = (
    "A strict rule is a filter: a placement that breaks it is refused (the VM waits, or a "
    "migration is refused). A non-strict one is a preference, broken only when nothing else "
    "fits."
)
KIND = "together: on one node; apart: no two of them on one node."


class HaGroupCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: HaName
    nodes: dict[HaName, Priority] = Field(
        min_length=1, max_length=MAX_GROUP_NODES, description=GROUP_NODES
    )
    restricted: bool = Field(default=False, description=RESTRICTED)
    nofailback: bool = Field(default=False, description=NOFAILBACK)
    description: Description = ""


class HaGroupUpdate(BaseModel):
    """The fields given change; the others stay."""

    model_config = ConfigDict(extra="forbid")

    nodes: dict[HaName, Priority] | None = Field(
        default=None, min_length=1, max_length=MAX_GROUP_NODES, description=GROUP_NODES
    )
    restricted: bool | None = Field(default=None, description=RESTRICTED)
    nofailback: bool | None = Field(default=None, description=NOFAILBACK)
    description: Description | None = Field(default=None, description='null or "" clears it.')


class HaGroupOut(BaseModel):
    name: str
    nodes: dict[str, int] = Field(description="node -> priority, highest first.")
    restricted: bool
    nofailback: bool
    description: str
    vms: int = Field(description="How many VMs are in the group.")
    created_at: datetime | None
    updated_at: datetime | None

    @classmethod
    def of(cls, group: HaGroup, vms: int) -> HaGroupOut:
        ordered = sorted(group.nodes.items(), key=lambda kv: (-kv[1], kv[0]))
        return cls(
            name=group.name, nodes=dict(ordered), restricted=group.restricted,
            nofailback=group.nofailback, description=group.description, vms=vms,
            created_at=group.created_at, updated_at=group.updated_at,
        )  # fmt: skip


class HaGroupPage(BaseModel):
    items: list[HaGroupOut]
    next_cursor: str | None
    total: int

    @classmethod
    def of(
        cls, groups: Sequence[HaGroup], counts: Mapping[str, int], next_cursor: str | None,
        total: int,
    ) -> HaGroupPage:  # fmt: skip
        items = [HaGroupOut.of(g, counts.get(g.name, 0)) for g in groups]
        return cls(items=items, next_cursor=next_cursor, total=total)


class AffinityRuleCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: HaName
    kind: Kind = Field(description=KIND)
    strict: bool = Field(default=False, description=STRICT)
    vms: list[HaName] = Field(min_length=2, max_length=MAX_RULE_VMS, description=RULE_VMS)
    description: Description = ""


class AffinityRuleUpdate(BaseModel):
    """The fields given change; the others stay."""

    model_config = ConfigDict(extra="forbid")

    kind: Kind | None = Field(default=None, description=KIND)
    strict: bool | None = Field(default=None, description=STRICT)
    vms: list[HaName] | None = Field(
        default=None, min_length=2, max_length=MAX_RULE_VMS, description=RULE_VMS
    )
    description: Description | None = Field(default=None, description='null or "" clears it.')


class AffinityRuleOut(BaseModel):
    name: str
    kind: Kind
    strict: bool
    vms: list[str] = Field(description="The rule's VMs, by name.")
    description: str
    created_at: datetime | None
    updated_at: datetime | None

    @classmethod
    def of(cls, rule: AffinityRule) -> AffinityRuleOut:
        return cls(
            name=rule.name, kind="apart" if rule.kind is AffinityKind.APART else "together",
            strict=rule.strict, vms=list(rule.vms),
            description=rule.description, created_at=rule.created_at, updated_at=rule.updated_at,
        )  # fmt: skip


class AffinityRulePage(BaseModel):
    items: list[AffinityRuleOut]
    next_cursor: str | None
    total: int
