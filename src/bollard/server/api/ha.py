"""/api/v1/ha: HA groups (nodes with priorities: where a VM prefers to run) and affinity rules
(VMs kept together on one node, or apart), domain/ha.py and operations/ha_policy_ops.py.

Reading needs the reader role; every change needs permission `ha.manage` (operator). A VM
joins a group by its own `ha_group` (`PATCH /api/v1/vms/{name}`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, TypeVar

from fastapi import APIRouter, Depends, Path, Query, Response

from bollard.domain.ha import AffinityKind
from bollard.server.api.deps import CoreDep, WorkDep
from bollard.server.api.ha_schemas import (
    AffinityRuleCreate,
    AffinityRuleOut,
    AffinityRulePage,
    AffinityRuleUpdate,
    HaGroupCreate,
    HaGroupOut,
    HaGroupPage,
    HaGroupUpdate,
)
from bollard.server.api.params import NAME_PATTERN
from bollard.server.operations.ha_policy_ops import GroupChange, HaPolicyOperations, RuleChange
from bollard.store import affinity, ha_groups
from bollard.store.pagination import DEFAULT_LIMIT, MAX_LIMIT, decode_cursor, encode_cursor

router = APIRouter(prefix="/ha", tags=["ha"])

GroupPath = Annotated[
    str, Path(min_length=1, max_length=63, pattern=NAME_PATTERN, description="The group's name.")
]
RulePath = Annotated[
    str, Path(min_length=1, max_length=63, pattern=NAME_PATTERN, description="The rule's name.")
]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page.")]
Cursor = Annotated[str | None, Query(description="`next_cursor` of the previous page.")]

T = TypeVar("T")


def _ha_ops(s: CoreDep) -> HaPolicyOperations:
    return HaPolicyOperations(work=s.work, clock=s.clock)


HaOpsDep = Annotated[HaPolicyOperations, Depends(_ha_ops)]


def _page(
    items: Sequence[T], name_of: str, limit: int, cursor: str | None
) -> tuple[list[T], str | None]:
    """One page of `items` (sorted by name) after `cursor`, and the next page's cursor."""
    after = decode_cursor(cursor) if cursor else None
    rest = [i for i in items if after is None or getattr(i, name_of) > after]
    shown = rest[:limit]
    more = len(rest) > limit
    return shown, encode_cursor(getattr(shown[-1], name_of)) if more and shown else None


# --- groups ------------------------------------------------------------------------------


async def _group_out(work: WorkDep, name: str) -> HaGroupOut:
    def tx() -> HaGroupOut:
        with work.read() as conn:
            group = ha_groups.get(conn, name)
            return HaGroupOut.of(group, ha_groups.member_counts(conn).get(name, 0))

    return await work.run(tx)


@router.get("/groups", response_model=HaGroupPage)
async def list_groups(
    work: WorkDep, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> HaGroupPage:
    """HA groups by name, each with its nodes (highest priority first) and how many VMs are
    in it."""

    def tx() -> HaGroupPage:
        with work.read() as conn:
            groups = ha_groups.all_groups(conn)
            counts = ha_groups.member_counts(conn)
        shown, next_cursor = _page(groups, "name", limit, cursor)
        return HaGroupPage.of(shown, counts, next_cursor, len(groups))

    return await work.run(tx)


@router.post("/groups", status_code=201, response_model=HaGroupOut)
async def create_group(body: HaGroupCreate, ops: HaOpsDep, work: WorkDep) -> HaGroupOut:
    """Define an HA group: nodes with priorities. A VM in it (`ha_group`) runs on its
    highest-priority available node; `restricted`: never outside it; unless `nofailback`, a
    VM moves back (live) when a node of higher priority than its own is available again.
    409 if a group of that name exists."""
    await ops.create_group(
        body.name, body.nodes, restricted=body.restricted, nofailback=body.nofailback,
        description=body.description,
    )  # fmt: skip
    return await _group_out(work, body.name)


@router.get("/groups/{name}", response_model=HaGroupOut)
async def show_group(name: GroupPath, work: WorkDep) -> HaGroupOut:
    return await _group_out(work, name)


@router.patch("/groups/{name}", response_model=HaGroupOut)
async def change_group(
    name: GroupPath, body: HaGroupUpdate, ops: HaOpsDep, work: WorkDep
) -> HaGroupOut:
    """Change the fields given: `nodes` (the group's nodes become these), `restricted`,
    `nofailback`, `description` (null or "" clears it). Its VMs follow the new priorities
    at their next placement (and by failback, unless `nofailback`)."""
    given = body.model_fields_set
    description = body.description
    if "description" in given and description is None:
        description = ""
    await ops.change_group(
        name,
        GroupChange(
            nodes=body.nodes, restricted=body.restricted, nofailback=body.nofailback,
            description=description,
        ),
    )  # fmt: skip
    return await _group_out(work, name)


@router.delete("/groups/{name}", status_code=204, response_class=Response)
async def delete_group(name: GroupPath, ops: HaOpsDep) -> Response:
    """Delete a group no VM is in (409 naming its VMs otherwise: take them out first with
    `PATCH /api/v1/vms/{vm}` `{"ha_group": ""}`)."""
    await ops.delete_group(name)
    return Response(status_code=204)


# --- affinity rules ----------------------------------------------------------------------


async def _rule_out(work: WorkDep, name: str) -> AffinityRuleOut:
    def tx() -> AffinityRuleOut:
        with work.read() as conn:
            return AffinityRuleOut.of(affinity.get(conn, name))

    return await work.run(tx)


@router.get("/rules", response_model=AffinityRulePage)
async def list_rules(
    work: WorkDep, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> AffinityRulePage:
    """Affinity rules by name, each with its kind, whether it is strict, and its VMs."""

    def tx() -> AffinityRulePage:
        with work.read() as conn:
            rules = affinity.all_rules(conn)
        shown, next_cursor = _page(rules, "name", limit, cursor)
        return AffinityRulePage(
            items=[AffinityRuleOut.of(r) for r in shown], next_cursor=next_cursor,
            total=len(rules),
        )  # fmt: skip

    return await work.run(tx)


@router.post("/rules", status_code=201, response_model=AffinityRuleOut)
async def create_rule(body: AffinityRuleCreate, ops: HaOpsDep, work: WorkDep) -> AffinityRuleOut:
    """Define an affinity rule between VMs: `together` (on one node) or `apart` (no two on
    one node); `strict`: a placement that breaks it is refused, else it is a preference.
    Creation, migration, HA recovery, drain and failback all honour it. 422 naming the VMs
    that do not exist; 409 if a rule of that name exists."""
    await ops.create_rule(
        body.name, AffinityKind(body.kind), body.vms, strict=body.strict,
        description=body.description,
    )  # fmt: skip
    return await _rule_out(work, body.name)


@router.get("/rules/{name}", response_model=AffinityRuleOut)
async def show_rule(name: RulePath, work: WorkDep) -> AffinityRuleOut:
    return await _rule_out(work, name)


@router.patch("/rules/{name}", response_model=AffinityRuleOut)
async def change_rule(
    name: RulePath, body: AffinityRuleUpdate, ops: HaOpsDep, work: WorkDep
) -> AffinityRuleOut:
    """Change the fields given: `kind`, `strict`, `vms` (the rule's VMs become these),
    `description` (null or "" clears it). VMs placed already stay where they are: the rule
    applies from their next placement on."""
    given = body.model_fields_set
    description = body.description
    if "description" in given and description is None:
        description = ""
    await ops.change_rule(
        name,
        RuleChange(
            kind=None if body.kind is None else AffinityKind(body.kind), strict=body.strict,
            vms=body.vms, description=description,
        ),
    )  # fmt: skip
    return await _rule_out(work, name)


@router.delete("/rules/{name}", status_code=204, response_class=Response)
async def delete_rule(name: RulePath, ops: HaOpsDep) -> Response:
    await ops.delete_rule(name)
    return Response(status_code=204)
