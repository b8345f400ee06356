"""The workload: a few client threads issue random VM operations through the REST API.

Operations: create (with or without start, sometimes on a chosen node), start, stop,
shutdown, restart, delete (and, opt-in, migrate), on a small pool of reused names. A client
keeps a rough belief of each VM (absent, on, off), so most operations fit the VM, and some
deliberately do not. Refusals (4xx, 503) are normal under chaos and only counted; a
transport error (the server is dead) is counted apart, followed by a short backoff, and does
not use up one of the run's operations. Any other 5xx is a bug and is recorded, unless the
server that gave it was cut from the database during the request (counted apart: see
``LocalCluster.cut_during``).

Each client draws from its own RNG seeded from the run's seed. With several servers, each
request goes to a live server drawn at random (from an RNG of its own, so that which servers
are down does not change the operations drawn); any server will do, as for a real client.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.chaos.cluster import Api, LocalCluster

OPS = ("create", "start", "stop", "shutdown", "restart", "delete", "migrate")
TASK_WAIT = 10.0  # seconds a client waits (server-side) for its task, at most
BACKOFF = (0.2, 0.6)  # after a transport error

# Weights of OPS (create, start, stop, shutdown, restart, delete, migrate) by what a client
# believes of the VM; the small weights are operations the server should refuse (409).
# Migrations only with `migrate` (on by default in the chaos tests).
_WEIGHTS = {
    "absent": (10, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3),
    "on": (0.5, 0.5, 3, 3, 3, 2, 3),
    "off": (0.5, 5, 0.5, 0.5, 0.5, 2, 1),
}
_AFTER = {
    "start": "on",
    "restart": "on",
    "stop": "off",
    "shutdown": "off",
    "delete": "absent",
}


@dataclass
class WorkloadStats:
    issued: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)  # "create 202", "stop 409", ...
    tasks: Counter[str] = field(default_factory=Counter)  # task end states seen by waits
    bugs: list[str] = field(default_factory=list)  # 5xx other than 503
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, key: str, bucket: str = "outcomes") -> None:
        with self.lock:
            getattr(self, bucket)[key] += 1

    def summary(self) -> str:
        accepted = sum(n for k, n in self.outcomes.items() if k.endswith(" 202"))
        refused = sum(n for k, n in self.outcomes.items() if k.split()[-1][:1] in "45")
        cut = sum(n for k, n in self.outcomes.items() if k.endswith("(database cut)"))
        down = sum(n for k, n in self.outcomes.items() if k.endswith(" unreachable"))
        parts = [f"{self.issued} ops: {accepted} accepted, {refused} refused, {down} unreachable"]
        if cut:
            parts[0] += f", {cut} failed on a server cut from the database"
        parts.append("by op: " + ", ".join(f"{k}={n}" for k, n in sorted(self.outcomes.items())))
        if self.tasks:
            parts.append("tasks waited on: " + ", ".join(f"{k}={n}" for k, n in self.tasks.items()))
        return "; ".join(parts)


@dataclass
class Workload:
    cluster: LocalCluster
    seed: int
    ops: int
    clients: int
    names: list[str]
    nodes: list[str]
    think: tuple[float, float]
    migrate: bool = False
    stats: WorkloadStats = field(default_factory=WorkloadStats)
    errors: list[str] = field(default_factory=list)
    _left: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _view: dict[str, str] = field(default_factory=dict)  # name -> absent | on | off
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    # task id -> (node, operation), while waited on
    _busy: dict[str, tuple[str | None, str]] = field(default_factory=dict)
    _busy_changed: threading.Condition = field(default_factory=threading.Condition)

    def start(self) -> None:
        self._left = self.ops
        for i in range(self.clients):
            thread = threading.Thread(target=self._client, args=(i,), name=f"client-{i}")
            thread.daemon = True
            thread.start()
            self._threads.append(thread)

    def join(self, timeout: float) -> bool:
        """Wait (until ``timeout``) for the clients to issue every operation; True if done."""
        for thread in self._threads:
            thread.join(timeout)
        return not any(t.is_alive() for t in self._threads)

    def stop(self) -> None:
        self._stop.set()

    def _take(self) -> bool:
        with self._lock:
            if self._left <= 0 or self._stop.is_set():
                return False
            self._left -= 1
            self.stats.issued += 1
            return True

    def _client(self, index: int) -> None:
        rng = random.Random(f"{self.seed}:client:{index}")
        apis = _Apis(self.cluster, random.Random(f"{self.seed}:route:{index}"))
        try:
            while self._take():
                self._one(apis, rng)
                self._stop.wait(rng.uniform(*self.think))  # pacing, not synchronisation
        except Exception as exc:  # noqa: BLE001 - a harness bug: reported, the run fails
            self.errors.append(f"client {index}: {type(exc).__name__}: {exc}")
        finally:
            apis.close()

    def _pick(self, rng: random.Random) -> tuple[str, str]:
        """A name and an operation; mostly one that fits what the client believes of the VM
        (absent, on, off), sometimes any (which the server should refuse cleanly)."""
        name = rng.choice(self.names)
        with self._lock:
            belief = self._view.get(name)
        ops = OPS if self.migrate else OPS[:-1]
        if rng.random() < 0.15 or belief is None:
            return rng.choice(ops), name
        weights = _WEIGHTS[belief][: len(ops)]
        return rng.choices(ops, weights)[0], name

    def _one(self, apis: _Apis, rng: random.Random) -> None:
        op, name = self._pick(rng)
        start = rng.random() < 0.6
        node = rng.choice(self.nodes) if rng.random() < 0.3 else None
        wait = rng.random() < 0.7
        label = "create+start" if op == "create" and start else op
        api = apis.pick()
        sent = time.monotonic()
        try:
            response = self._request(api, op, name, start, node)
        except httpx.TransportError:
            # The server is down (or died during the request): not counted as one of the
            # run's operations; back off and draw another.
            self.stats.add(f"{label} unreachable")
            with self._lock:
                self._left += 1
                self.stats.issued -= 1
            self._stop.wait(rng.uniform(*BACKOFF))
            return
        code = response.status_code
        bug = code >= 500 and code != 503
        if bug and self.cluster.cut_during(api.url, sent):
            bug = False
            self.stats.add(f"{label} {code} (database cut)")
        else:
            self.stats.add(f"{label} {code}")
        self._learn(op, name, start, code, response)
        if code == 202:
            body = response.json()
            task_id, node = body["task"]["id"], (body.get("vm") or {}).get("node")
            if wait:
                self._set_busy(task_id, node, op)
                try:
                    self._wait_task(apis, task_id, name)
                finally:
                    self._set_busy(task_id, None, None)
        elif bug:
            self.stats.bugs.append(f"{op} {name} via {api.url}: HTTP {code}: {response.text[:300]}")

    def _request(
        self, api: Api, op: str, name: str, start: bool, node: str | None
    ) -> httpx.Response:
        if op == "create":
            body: dict[str, Any] = {"name": name, "vcpus": 1, "memory_mb": 64, "start": start}
            if node is not None:
                body["node"] = node
            return api.http.post("/vms", json=body)
        if op == "delete":
            return api.http.delete(f"/vms/{name}")
        if op == "migrate":
            return api.http.post(f"/vms/{name}/migrate", json={"to": node} if node else {})
        return api.http.post(f"/vms/{name}/{op}")

    def _learn(self, op: str, name: str, start: bool, code: int, response: httpx.Response) -> None:
        """Update the client's belief about the VM (a guess: tasks may still fail)."""
        with self._lock:
            if code == 404:
                self._view[name] = "absent"
            elif op == "create" and code == 409 and "already exists" in response.text:
                self._view.setdefault(name, "off")
            elif code == 202:
                if op == "create":
                    self._view[name] = "on" if start else "off"
                elif op in _AFTER:
                    self._view[name] = _AFTER[op]

    def _set_busy(self, task_id: str, node: str | None, op: str | None) -> None:
        """Record a task in flight (``op`` given), or forget it (``op`` None)."""
        with self._busy_changed:
            if op is None:
                self._busy.pop(task_id, None)
            else:
                self._busy[task_id] = (node, op)
                self._busy_changed.notify_all()

    def busy_node(self, timeout: float) -> str | None:
        """The node of a task in flight now (the latest one), waiting up to ``timeout`` for
        one: lets the nemesis aim its kills at commands being executed."""

        def nodes() -> list[str]:
            return [node for node, _op in self._busy.values() if node is not None]

        with self._busy_changed:
            self._busy_changed.wait_for(lambda: bool(nodes()), timeout)
            return next(reversed(nodes()), None)

    def busy_task(self, op: str, timeout: float) -> str | None:
        """The id of a task of operation ``op`` in flight now (the latest one), waiting up to
        ``timeout`` for one: lets the nemesis strike the server that runs a migration."""

        def tasks() -> list[str]:
            return [task_id for task_id, (_node, what) in self._busy.items() if what == op]

        with self._busy_changed:
            self._busy_changed.wait_for(lambda: bool(tasks()), timeout)
            return next(reversed(tasks()), None)

    def _wait_task(self, apis: _Apis, task_id: str, name: str) -> None:
        try:
            response = apis.pick().http.get(f"/tasks/{task_id}/wait", params={"timeout": TASK_WAIT})
        except httpx.TransportError:
            self.stats.add("unreachable", "tasks")
            return
        if response.status_code == 200:
            state = str(response.json()["state"])
            self.stats.add(state, "tasks")
            if state == "failed":
                with self._lock:
                    self._view.pop(name, None)  # no longer sure what the VM is
        else:
            self.stats.add(f"HTTP {response.status_code}", "tasks")


class _Apis:
    """One client thread's API clients, one per server (httpx clients are not shared across
    threads); ``pick`` gives the client of a live server drawn at random (the only server's
    with one)."""

    def __init__(self, cluster: LocalCluster, rng: random.Random) -> None:
        self.cluster = cluster
        self.rng = rng
        self._by_url: dict[str, Api] = {}

    def pick(self) -> Api:
        urls = self.cluster.live_urls() or [self.cluster.url]
        url = urls[0] if len(urls) == 1 else self.rng.choice(urls)
        api = self._by_url.get(url)
        if api is None:
            api = self._by_url[url] = self.cluster.api_at(url, timeout=TASK_WAIT + 10)
        return api

    def close(self) -> None:
        for api in self._by_url.values():
            api.close()
