"""Setting a scenario's cluster up through the REST API, once its processes run: settings,
shutdown policies, HA groups, VMs (created, started or not, with their HA fields), affinity
rules; then waiting until every VM is where and as it was declared."""

from __future__ import annotations

import time
from typing import Any

from bollard.cli.client import Client, CliError
from bollard.cli.scenario_cluster import ScenarioCluster
from bollard.cli.scenario_timeline import Timeline
from bollard.sim.fabric import Fabric
from bollard.sim.scenario.model import ClusterSpec, VmSpec
from bollard.sim.scenario.watch import FabricView

__all__ = ["running_by_name", "set_up"]

TASK_ENDED = frozenset({"succeeded", "failed", "rolled_back", "needs_attention"})
# The scenario's defaults, unless its settings say otherwise: the health monitor judges
# nodes at once (no start-up grace).
DEFAULT_SETTINGS: dict[str, Any] = {"health.startup_grace": 0}
# VMs' volumes: in one shared pool (every sim host sees it), so they follow their VM.
SHARED_POOL = "scenario"
SHARED_POOL_PATH = "/srv/scenario"
VOLUME_MB = 64


def set_up(
    cluster: ScenarioCluster, spec: ClusterSpec, timeline: Timeline, timeout: float
) -> dict[str, str]:
    """Apply ``spec`` to the running cluster; VM name -> uuid. CliError if anything fails."""
    client = cluster.client
    for key, value in {**DEFAULT_SETTINGS, **spec.settings}.items():
        _call(client, "PUT", f"/settings/{key}", {"value": value}, f"set {key}")
    for node in spec.nodes:
        if node.shutdown_policy is not None:
            _call(
                client,
                "PATCH",
                f"/nodes/{node.name}",
                {"shutdown_policy": node.shutdown_policy},
                f"set the shutdown policy of {node.name}",
            )
    for group in spec.groups:
        body = {
            "name": group.name,
            "nodes": group.nodes,
            "restricted": group.restricted,
            "nofailback": group.nofailback,
        }
        _call(client, "POST", "/ha/groups", body, f"create HA group {group.name}")
    deadline = time.monotonic() + timeout
    _volumes(client, spec, deadline)
    tasks = [(vm.name, _create(client, vm)) for vm in spec.vms]
    for name, task_id in tasks:
        _wait_task(client, task_id, f"create VM {name}", deadline)
    _attach(client, spec, deadline)
    for vm in spec.vms:
        if vm.ha_state is not None:
            _call(
                client,
                "PATCH",
                f"/vms/{vm.name}",
                {"ha_state": vm.ha_state},
                f"set the ha_state of {vm.name}",
            )
    for rule in spec.rules:
        body = {"name": rule.name, "kind": rule.kind, "strict": rule.strict, "vms": list(rule.vms)}
        _call(client, "POST", "/ha/rules", body, f"create affinity rule {rule.name}")
    uuids = _wait_settled(cluster, spec, deadline)
    volumes = sum(len(vm.volumes) for vm in spec.vms)
    timeline.add(
        "setup",
        f"{len(spec.vms)} VMs ({volumes} shared volumes), {len(spec.groups)} groups, "
        f"{len(spec.rules)} rules in place",
    )
    return uuids


def _call(client: Client, method: str, path: str, body: Any, what: str) -> Any:
    try:
        return client.request(method, path, json=body)
    except CliError as exc:
        raise CliError(f"cannot {what}: {exc}") from None


def _volumes(client: Client, spec: ClusterSpec, deadline: float) -> None:
    """The shared pool and its volumes, for the VMs that have some."""
    volumes = [volume for vm in spec.vms for volume in vm.volumes]
    if not volumes:
        return
    pool = {"name": SHARED_POOL, "type": "shared", "path": SHARED_POOL_PATH}
    _call(client, "POST", "/pools", pool, f"create the shared pool {SHARED_POOL}")
    body = {"size_mb": VOLUME_MB, "pool": SHARED_POOL}
    tasks = [
        (v, _call(client, "POST", "/volumes", {"name": v, **body}, f"create volume {v}"))
        for v in volumes
    ]
    for volume, answer in tasks:
        _wait_task(client, str(answer["task"]["id"]), f"create volume {volume}", deadline)


def _attach(client: Client, spec: ClusterSpec, deadline: float) -> None:
    """Attach each VM's volumes (it was created stopped), then start it if it runs."""
    for vm in spec.vms:
        for volume in vm.volumes:
            what = f"attach volume {volume} to {vm.name}"
            answer = _call(client, "POST", f"/volumes/{volume}/attach", {"vm": vm.name}, what)
            _wait_task(client, str(answer["task"]["id"]), what, deadline)
        if vm.volumes and vm.running:
            answer = _call(client, "POST", f"/vms/{vm.name}/start", None, f"start {vm.name}")
            _wait_task(client, str(answer["task"]["id"]), f"start {vm.name}", deadline)


def _create(client: Client, vm: VmSpec) -> str:
    body: dict[str, Any] = {
        "name": vm.name,
        "vcpus": vm.vcpus,
        "memory_mb": vm.memory_mb,
        "start": vm.running and not vm.volumes,  # (started once its volumes are attached)
        **vm.meta,
    }
    if vm.node is not None:
        body["node"] = vm.node
    answer = _call(client, "POST", "/vms", body, f"create VM {vm.name}")
    return str(answer["task"]["id"])


def _wait_task(client: Client, task_id: str, what: str, deadline: float) -> dict[str, Any]:
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise CliError(f"cannot {what}: its task {task_id} did not end in time")
        task: dict[str, Any] = client.get(
            f"/tasks/{task_id}/wait", params={"timeout": min(left, 30.0)}
        )
        if task.get("state") in TASK_ENDED:
            if task.get("state") != "succeeded":
                raise CliError(f"cannot {what}: its task {task['state']}: {task.get('error')}")
            return task


def running_by_name(fabric: Fabric, names: dict[str, str]) -> dict[str, list[str]]:
    """VM name -> the sim hosts it runs on (``names``: uuid -> name)."""
    view = FabricView.of(fabric.snapshot())
    return {names.get(uuid, uuid): hosts for uuid, hosts in view.running.items()}


def _wait_settled(cluster: ScenarioCluster, spec: ClusterSpec, deadline: float) -> dict[str, str]:
    """Until each VM runs (on its server node, ACTIVE) or not as declared; name -> uuid."""
    fabric = Fabric(cluster.fabric_dir)
    wanted = {vm.name: vm for vm in spec.vms}
    while True:
        listed = {v["name"]: v for v in cluster.client.list_all("/vms")}
        names = {v["uuid"]: v["name"] for v in listed.values()}
        running = running_by_name(fabric, names)
        waiting = []
        for name, vm in wanted.items():
            got = listed.get(name)
            if got is None:
                waiting.append(f"{name} (not listed)")
            elif vm.running and (
                running.get(name) != [got.get("node")] or got.get("status") != "ACTIVE"
            ):
                waiting.append(f"{name} (not running yet)")
            elif not vm.running and running.get(name):
                waiting.append(f"{name} (running, declared stopped)")
        if not waiting:
            return {name: str(listed[name]["uuid"]) for name in wanted}
        if time.monotonic() >= deadline:
            raise CliError(f"the VMs did not settle as declared: {', '.join(waiting)}")
        time.sleep(0.1)  # polling interval
