from __future__ import annotations

import pytest

from bollard.domain.errors import InsufficientCapacity, NodeUnavailable, NotFound
from bollard.domain.placement import NodeCapacity, choose_node


def node(
    name: str, mem: int, used_mem: int = 0, cpus: int = 8, used_cpus: int = 0, up: bool = True
) -> NodeCapacity:
    return NodeCapacity(name, up, cpus, mem, used_cpus, used_mem)


def test_most_free_memory_wins() -> None:
    nodes = [node("a", 8192, 4096), node("b", 16384, 4096), node("c", 8192)]
    assert choose_node(nodes, 1, 1024).name == "b"


def test_ties_break_by_name() -> None:
    assert choose_node([node("b", 4096), node("a", 4096)], 1, 1024).name == "a"


def test_disconnected_nodes_are_skipped() -> None:
    nodes = [node("big", 65536, up=False), node("small", 2048)]
    assert choose_node(nodes, 1, 1024).name == "small"


def test_vcpus_must_fit_too() -> None:
    nodes = [node("roomy", 65536, cpus=4, used_cpus=4), node("tight", 2048)]
    assert choose_node(nodes, 2, 1024).name == "tight"


def test_exact_fit_is_accepted() -> None:
    assert choose_node([node("a", 1024)], 8, 1024).name == "a"


def test_nothing_fits_explains_each_node() -> None:
    nodes = [node("a", 1024), node("b", 65536, up=False), node("c", 8192, cpus=1)]
    with pytest.raises(InsufficientCapacity) as err:
        choose_node(nodes, 2, 2048)
    message = err.value.message
    assert "a: 1024 MB free" in message
    assert "b: not connected" in message
    assert "c: 1 vCPUs free" in message


def test_no_nodes() -> None:
    with pytest.raises(InsufficientCapacity, match="no node is enrolled"):
        choose_node([], 1, 128)


def test_wanted_node() -> None:
    nodes = [node("a", 65536), node("b", 4096)]
    assert choose_node(nodes, 1, 1024, wanted="b").name == "b"
    with pytest.raises(NotFound):
        choose_node(nodes, 1, 1024, wanted="zz")
    with pytest.raises(InsufficientCapacity, match="'b' cannot take"):
        choose_node(nodes, 1, 8192, wanted="b")
    with pytest.raises(NodeUnavailable):
        choose_node([node("d", 4096, up=False)], 1, 1024, wanted="d")
