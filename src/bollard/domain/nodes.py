"""A node's two state machines and their whitelisted transitions (DESIGN.md section 5):
health (is the host alive, and has it been fenced?) and scheduling state (does it take
VMs?). Each table lists every move the server makes; anything else is refused."""

from __future__ import annotations

from bollard.domain.states import NodeHealth, SchedulingState

HEALTH_TRANSITIONS: dict[NodeHealth, frozenset[NodeHealth]] = {
    # The health monitor: missed heartbeats or a lost session make a node suspect, enough
    # of them dead. (A server start makes every up node suspect until it beats again.)
    NodeHealth.UP: frozenset({NodeHealth.SUSPECT, NodeHealth.DEAD}),
    # Beating again: up. An operator's confirm-down: fenced.
    NodeHealth.SUSPECT: frozenset({NodeHealth.UP, NodeHealth.DEAD, NodeHealth.FENCED}),
    # The fencer takes a dead node; a dead node that comes back rejoins (up); an operator
    # may confirm it down (fenced) instead.
    NodeHealth.DEAD: frozenset({NodeHealth.UP, NodeHealth.FENCING, NodeHealth.FENCED}),
    # The fence task decides: power off confirmed, or not. A node that reconnects while it
    # is being fenced stays fencing until the fence ends.
    NodeHealth.FENCING: frozenset({NodeHealth.FENCED, NodeHealth.FENCE_FAILED}),
    # A fenced host that booted again rejoins once its stale VM copies are destroyed.
    NodeHealth.FENCED: frozenset({NodeHealth.UP}),
    # It rejoins by itself, or an operator confirms it is off.
    NodeHealth.FENCE_FAILED: frozenset({NodeHealth.UP, NodeHealth.FENCED}),
}

# No health is final: every node can come back.
HEALTH_TERMINAL = frozenset(s for s, nxt in HEALTH_TRANSITIONS.items() if not nxt)


def health_allowed(src: NodeHealth, dst: NodeHealth) -> bool:
    return dst in HEALTH_TRANSITIONS[src]


SCHEDULING_TRANSITIONS: dict[SchedulingState, frozenset[SchedulingState]] = {
    # A flush request.
    SchedulingState.READY: frozenset({SchedulingState.FLUSHING}),
    # The flush ends (flushed; in maintenance when `node maintenance on` asked for it), or
    # an unflush stops it.
    SchedulingState.FLUSHING: frozenset(
        {SchedulingState.FLUSHED, SchedulingState.MAINTENANCE, SchedulingState.UNFLUSHING}
    ),
    # An unflush, or maintenance on (a drain again, ending in maintenance).
    SchedulingState.FLUSHED: frozenset({SchedulingState.UNFLUSHING, SchedulingState.FLUSHING}),
    # The unflush's first step makes the node ready. A flush stops an unflush at any point;
    # an unflush of an unflushing node restarts the return (unflushing -> unflushing).
    SchedulingState.UNFLUSHING: frozenset(
        {SchedulingState.READY, SchedulingState.FLUSHING, SchedulingState.UNFLUSHING}
    ),
    # Maintenance off: an unflush takes it out.
    SchedulingState.MAINTENANCE: frozenset({SchedulingState.UNFLUSHING}),
}

# No scheduling state is final.
SCHEDULING_TERMINAL = frozenset(s for s, nxt in SCHEDULING_TRANSITIONS.items() if not nxt)


def scheduling_allowed(src: SchedulingState, dst: SchedulingState) -> bool:
    return dst in SCHEDULING_TRANSITIONS[src]
