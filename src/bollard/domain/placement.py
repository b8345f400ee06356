"""Choosing a node for a VM. Pure: the caller passes what it knows of the nodes."""

from __future__ import annotations

from dataclasses import dataclass

from bollard.domain.errors import InsufficientCapacity, NodeUnavailable, NotFound


@dataclass(frozen=True)
class NodeCapacity:
    name: str
    connected: bool
    vcpus: int
    memory_mb: int
    allocated_vcpus: int
    allocated_memory_mb: int

    @property
    def free_vcpus(self) -> int:
        return self.vcpus - self.allocated_vcpus

    @property
    def free_memory_mb(self) -> int:
        return self.memory_mb - self.allocated_memory_mb

    def fits(self, vcpus: int, memory_mb: int) -> bool:
        return self.free_vcpus >= vcpus and self.free_memory_mb >= memory_mb


def _reason(node: NodeCapacity, vcpus: int, memory_mb: int) -> str | None:
    if not node.connected:
        return "not connected"
    if node.free_memory_mb < memory_mb:
        return f"{node.free_memory_mb} MB free, {memory_mb} MB needed"
    if node.free_vcpus < vcpus:
        return f"{node.free_vcpus} vCPUs free, {vcpus} needed"
    return None


def choose_node(
    nodes: list[NodeCapacity], vcpus: int, memory_mb: int, *, wanted: str | None = None
) -> NodeCapacity:
    """The connected node with the most free memory that fits (ties: by name).

    With ``wanted``, that node or an error saying why it cannot take the VM.
    """
    if wanted is not None:
        match = [n for n in nodes if n.name == wanted]
        if not match:
            raise NotFound(f"node {wanted!r} does not exist")
        node = match[0]
        reason = _reason(node, vcpus, memory_mb)
        if reason == "not connected":
            raise NodeUnavailable(f"node {wanted!r} is not connected")
        if reason is not None:
            raise InsufficientCapacity(f"node {wanted!r} cannot take the VM: {reason}")
        return node
    candidates = [n for n in nodes if _reason(n, vcpus, memory_mb) is None]
    if not candidates:
        if not nodes:
            raise InsufficientCapacity("no node is enrolled")
        reasons = "; ".join(f"{n.name}: {_reason(n, vcpus, memory_mb)}" for n in nodes)
        raise InsufficientCapacity(f"no node can take {vcpus} vCPUs and {memory_mb} MB ({reasons})")
    return sorted(candidates, key=lambda n: (-n.free_memory_mb, n.name))[0]
