"""The nemesis of a three-server run: at seeded random moments it strikes one of

- ``agent``: an agent (SIGKILL; most aimed at the node of a task in flight), as the
  one-server nemesis does;
- ``leader``: the server holding the leader lease (``GET /servers``);
- ``holder``: a server holding agent sessions;
- ``owner``: the server that owns a running migration (its task's ``server``), a random
  fraction of a second into it;
- ``cut``: a server's database connection (its proxy, dbproxy.py), for ``cut_for`` lease
  periods, half the time the leader's; ``blackhole`` or ``reset`` (drawn; the leader's is
  always ``reset`` unless ``blackhole_leader``).

A killed process is started again (`bollard up --restart-process`) after a seeded delay,
sometimes killed once more while it starts. At most ``max_servers_down`` servers are down,
cut or still starting at once (one at least can lead) and ``max_agents_down`` agents; a
killed server's row, up until its lease runs out, is never taken for its next run's. A
strike whose target does not exist at that moment (no leader, no migration running, every
holder already down) is noted as skipped: the seed fixes the draws, timing decides what they
find.

Every kill of the leader (whatever the draw that chose it) and every cut of it is recorded
with the leader's id, for the failover measure (leader_watch.py).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from tests.chaos.cluster import ChaosError
from tests.chaos.dbproxy import MODES
from tests.chaos.nemesis import AGAIN_AFTER, AIM_OFFSET, AIM_WAIT, NemesisEvent
from tests.chaos.servers_cluster import ServersCluster

log = logging.getLogger(__name__)

KINDS = ("agent", "leader", "holder", "owner", "cut")
WEIGHTS = (0.3, 0.2, 0.15, 0.15, 0.2)


@dataclass(frozen=True)
class LeaderLoss:
    """The leader ``leader_id`` (process ``name``) was killed or cut at ``at`` (monotonic)."""

    at: float
    leader_id: str
    name: str
    how: str  # "kill" or "cut"


@dataclass
class ServersNemesis:
    cluster: ServersCluster
    seed: int
    kill_every: tuple[float, float]
    restart_after: tuple[float, float]  # agents and servers alike
    cut_for: tuple[float, float]  # lease periods
    aim: float = 0.7
    again: float = 0.2
    active_for: float | None = None
    max_servers_down: int = 2
    max_agents_down: int = 2
    blackhole_leader: bool = True
    seen_gone_timeout: float = 20.0
    busy_node: Callable[[float], str | None] = lambda _timeout: None
    busy_task: Callable[[str, float], str | None] = lambda _op, _timeout: None
    events: list[NemesisEvent] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    losses: list[LeaderLoss] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _t0: float = 0.0
    _down: dict[str, float] = field(default_factory=dict)  # process -> when to restart it
    _again: dict[str, tuple[float, float]] = field(default_factory=dict)
    _cut: dict[str, float] = field(default_factory=dict)  # server -> when to heal its cut
    # server -> when the nemesis last started it again (wall clock, as GET /servers's times)
    _restarted: dict[str, datetime] = field(default_factory=dict)

    @property
    def t0(self) -> float:
        """When it started (monotonic)."""
        return self._t0

    @property
    def kills(self) -> int:
        return sum(e.action == "kill" for e in self.events)

    def count(self, name: str) -> int:
        return sum(e.action in ("kill", "cut") and e.name == name for e in self.events)

    def strikes(self) -> dict[str, int]:
        """How many strikes of each kind hit something (``kill:leader``, ``cut``, ...)."""
        found: dict[str, int] = {}
        for e in self.events:
            if e.action not in ("restart", "heal"):
                kind = ":".join(e.action.split(":")[:2])  # (a cut's length aside)
                found[kind] = found.get(kind, 0) + 1
        return found

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="servers-nemesis", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 90.0) -> None:
        """Stop striking; every process it killed is restarted, and every cut healed, before
        this returns."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise ChaosError(f"the nemesis did not stop within {timeout:g}s")

    def _at(self) -> float:
        return time.monotonic() - self._t0

    def _note(self, action: str, name: str, pid: int | None) -> None:
        self.events.append(NemesisEvent(self._at(), action, name, pid))

    def _skip(self, why: str) -> None:
        self.skipped.append(f"{self._at():7.2f}s {why}")

    # -- the schedule -----------------------------------------------------------------------

    def _run(self) -> None:
        rng = random.Random(f"{self.seed}:servers-nemesis")
        next_strike = time.monotonic() + rng.uniform(*self.kill_every)
        until = None if self.active_for is None else self._t0 + self.active_for
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if until is not None and now >= until:
                    break  # its time is up: restart and heal (below), then rest
                self._due(rng, now)
                if now >= next_strike:
                    # Draw the same numbers whatever happens, so the schedule stays seeded.
                    kind = rng.choices(KINDS, WEIGHTS)[0]
                    draw = Draw(
                        aim=rng.random() < self.aim,
                        offset=rng.uniform(*AIM_OFFSET),
                        delay=rng.uniform(*self.restart_after),
                        cut_for=rng.uniform(*self.cut_for) * self.cluster.lease_ttl,
                        mode=rng.choice(MODES),
                        at_leader=rng.random() < 0.5,
                        pick=rng.random(),
                    )
                    next_strike = now + rng.uniform(*self.kill_every)
                    self._strike(kind, draw)
                moments = [next_strike, *self._down.values(), *self._cut.values()]
                moments += [due for due, _ in self._again.values()]
                if until is not None:
                    moments.append(until)
                self._stop.wait(max(0.0, min(moments) - time.monotonic()))
        except Exception as exc:  # reported by the harness; the run then fails
            log.exception("nemesis failed")
            self.errors.append(f"nemesis: {type(exc).__name__}: {exc}")
        finally:
            self._end()

    def _due(self, rng: random.Random, now: float) -> None:
        """Restart what is due (sometimes to strike it again while it starts), heal what is
        due, strike again what is due."""
        for name, due in sorted(self._down.items(), key=lambda kv: kv[1]):
            if due <= now:
                self._restart(name)
                when, delay = rng.uniform(*AGAIN_AFTER), rng.uniform(*self.restart_after)
                if rng.random() < self.again:
                    self._again[name] = (time.monotonic() + when, delay)
        for name, due in sorted(self._cut.items(), key=lambda kv: kv[1]):
            if due <= now:
                self._heal(name)
        for name, (due, delay) in sorted(self._again.items(), key=lambda kv: kv[1]):
            if due <= now:
                del self._again[name]
                if self._may_down(name):
                    self._kill(name, delay, "again")

    def _end(self) -> None:
        for name in list(self._cut):
            try:
                self._heal(name)
            except Exception as exc:  # noqa: BLE001 - reported by the harness
                self.errors.append(f"nemesis: healing {name}: {type(exc).__name__}: {exc}")
        self._cut.clear()
        for name in list(self._down):
            try:
                self._restart(name)
            except Exception as exc:  # noqa: BLE001 - reported by the harness
                self.errors.append(f"nemesis: restarting {name}: {type(exc).__name__}: {exc}")

    # -- the strikes ------------------------------------------------------------------------

    def _impaired(self, view: dict[str, Any]) -> set[str]:
        """The servers that cannot take the leader's lease now: killed, cut, or started
        again but not joined yet (``view``: GET /servers). A server takes seconds to start
        on a loaded machine; striking the last healthy one meanwhile would leave none to
        lead, and the failover measure would time the start-up, not the takeover."""
        servers = set(self.cluster.server_names)
        down = {n for n in self._down if n in servers} | set(self._cut)
        joined = {self._name(s) for s in view["items"] if self._current(s)}
        return down | {n for n in self._restarted if n not in joined}

    def _may_down(self, name: str, view: dict[str, Any] | None = None) -> bool:
        if name in self._down or name in self._cut:
            return False
        if name in self.cluster.server_names:
            view = view or self.cluster.view()
            if view is None:
                return False  # no server answers: do not make it worse
            return len(self._impaired(view) - {name}) < self.max_servers_down
        agents_down = [n for n in self._down if n not in self.cluster.server_names]
        return len(agents_down) < self.max_agents_down

    def _strike(self, kind: str, draw: Draw) -> None:
        if kind == "agent":
            agents = [n for n in self.cluster.names() if n not in self.cluster.server_names]
            victim = agents[int(draw.pick * len(agents))]
            if draw.aim:
                busy = self.busy_node(AIM_WAIT)
                if busy is not None:
                    victim = busy
                    self._stop.wait(draw.offset)  # into the task: its command is running
            if self._may_down(victim):
                self._kill(victim, draw.delay, "agent")
            return
        if kind == "owner":
            self._strike_owner(draw)
            return
        view = self.cluster.view()
        if view is None:
            self._skip(f"{kind}: no server answered GET /servers")
            return
        up = {s["id"]: s for s in view["items"] if self._current(s)}
        if kind == "holder":
            holders = sorted(self._name(s) for s in up.values() if s["agents"] > 0)
            holders = [n for n in holders if self._may_down(n, view)]
            if not holders:
                self._skip("holder: no server holding agents may go down now")
                return
            self._kill_server(holders[int(draw.pick * len(holders))], draw.delay, view, "holder")
            return
        leader = up.get(view["leader"] or "")
        if kind == "cut":
            names = sorted(self._name(s) for s in up.values())
            if draw.at_leader and leader is not None:
                names = [self._name(leader)]
            names = [n for n in names if self._may_down(n, view)]
            if not names:
                self._skip("cut: no server may be cut now")
                return
            self._cut_server(names[int(draw.pick * len(names))], draw, view)
            return
        if leader is None:
            self._skip("leader: no leader now (or only the row of a process killed already)")
            return
        name = self._name(leader)
        if not self._may_down(name, view):
            self._skip(f"leader: {name} may not go down now")
            return
        self._kill_server(name, draw.delay, view, "leader")

    def _strike_owner(self, draw: Draw) -> None:
        """Kill the server that owns a running migration (the latest a client waits on,
        else one from GET /tasks?active=true)."""
        task_id = self.busy_task("migrate", AIM_WAIT if draw.aim else 0.0)
        owner = self._owner(task_id) if task_id is not None else None
        if owner is None:
            owner = self._any_migration_owner()
        if owner is None:
            self._skip("owner: no migration running")
            return
        view = self.cluster.view()
        if view is None:
            self._skip("owner: no server answered GET /servers")
            return
        server = next((s for s in view["items"] if s["id"] == owner), None)
        if server is None or not self._current(server):
            self._skip(f"owner: the migration's server {owner} is not up (or was killed)")
            return
        name = self._name(server)
        if not self._may_down(name, view):
            self._skip(f"owner: {name} may not go down now")
            return
        self._stop.wait(draw.offset)  # a little further into the migration
        self._kill_server(name, draw.delay, view, "owner")

    def _owner(self, task_id: str) -> str | None:
        task = self._get(f"/tasks/{task_id}")
        if task is None or task["state"] != "running":
            return None
        return str(task["server"]) if task["server"] else None

    def _any_migration_owner(self) -> str | None:
        page = self._get("/tasks", active="true", limit=100)
        for task in page["items"] if page else []:
            if task["type"] == "migrate" and task["state"] == "running" and task["server"]:
                return str(task["server"])
        return None

    def _get(self, path: str, **params: Any) -> Any:
        for url in self.cluster.live_urls():
            try:
                with self.cluster.api_at(url, timeout=2.0) as api:
                    return api.get(path, **params)
            except httpx.HTTPError:
                continue
        return None

    def _current(self, server: dict[str, Any]) -> bool:
        """Whether a row of GET /servers is up and belongs to the process running now: a
        killed server's row stays up until its lease runs out (or its next run joins), and
        striking at it would hit its next run instead, which holds nothing yet."""
        if server["state"] != "up":
            return False
        since = self._restarted.get(self._name(server))
        return since is None or datetime.fromisoformat(server["started_at"]) >= since

    def _name(self, server: dict[str, Any]) -> str:
        name = self.cluster.name_at(server["url"])
        if name is None:
            raise ChaosError(f"GET /servers names a server at {server['url']}, not ours")
        return name

    def _kill_server(self, name: str, delay: float, view: dict[str, Any], why: str) -> None:
        """Kill server ``name``; a kill of the leader is recorded for the failover measure
        (whichever draw chose it)."""
        leader = next((s for s in view["items"] if s["id"] == view["leader"]), None)
        killed_leader = leader is not None and self._current(leader) and self._name(leader) == name
        at = time.monotonic()
        self._kill(name, delay, why)
        if killed_leader and leader is not None:
            self.losses.append(LeaderLoss(at, leader["id"], name, "kill"))

    def _kill(self, name: str, delay: float, why: str) -> None:
        self._note(f"kill:{why}", name, self.cluster.kill(name))
        self._down[name] = time.monotonic() + delay

    def _cut_server(self, name: str, draw: Draw, view: dict[str, Any]) -> None:
        leader = next((s for s in view["items"] if s["id"] == view["leader"]), None)
        cut_leader = leader is not None and self._current(leader) and self._name(leader) == name
        mode = draw.mode if self.blackhole_leader or not cut_leader else "reset"
        at = time.monotonic()
        self.cluster.proxies[name].cut(mode)
        self._note(f"cut:{mode}:{draw.cut_for:.1f}s", name, None)
        self._cut[name] = time.monotonic() + draw.cut_for
        if cut_leader and leader is not None:
            self.losses.append(LeaderLoss(at, leader["id"], name, "cut"))

    def _heal(self, name: str) -> None:
        """End the cut of ``name``. A leader cut for less than a lease (the nemesis stopped
        early) may rightly have kept its lease: that cut is no loss of the leader."""
        self.cluster.proxies[name].heal()
        del self._cut[name]
        self._note("heal", name, None)
        healed = time.monotonic()
        ttl = self.cluster.lease_ttl
        for loss in [x for x in self.losses if x.how == "cut" and x.name == name]:
            if loss.at <= healed < loss.at + ttl:
                self.losses.remove(loss)
                self._skip(f"cut of leader {name} healed after {healed - loss.at:.1f}s, under a"
                           f" lease ({ttl:g}s): it may keep the lead")  # fmt: skip

    def _restart(self, name: str) -> None:
        if name not in self.cluster.server_names:
            self._check_seen_gone(name)
        else:
            self._restarted[name] = datetime.now(UTC)
        self._note("restart", name, self.cluster.restart(name))
        self._down.pop(name, None)

    def _check_seen_gone(self, node: str) -> None:
        """Before its agent comes back, the servers must show the node disconnected: by its
        server at once, or, if that server is down or cut, once the leader has taken it for
        dead and ended its sessions (a lease and a bit; more if the leader is gone too)."""

        def connected() -> bool | None:
            found = self._get("/nodes")
            if found is None:
                return None  # no server answers: nothing to learn now
            return any(n["name"] == node and n["connected"] for n in found["items"])

        deadline = time.monotonic() + self.seen_gone_timeout
        while connected() and time.monotonic() < deadline:
            time.sleep(0.1)  # polling interval
        if connected():
            self.errors.append(
                f"nemesis: {self.seen_gone_timeout:g}s after its agent was SIGKILLed, the "
                f"servers still show {node} connected (a dead session left registered)"
            )


@dataclass(frozen=True)
class Draw:
    """One strike's draws (all made whatever the strike finds, to keep the schedule)."""

    aim: bool
    offset: float
    delay: float
    cut_for: float  # seconds
    mode: str
    at_leader: bool
    pick: float  # in [0, 1): which of the candidates
