"""The nemesis: SIGKILLs agents and the server at seeded random moments and restarts each,
from cluster.json (`bollard up --restart-process`), after a seeded random delay.

- Kills may overlap (an agent dies while the server is still down), up to ``max_down``
  processes at a time.
- Most kills are aimed: they wait (briefly) for a task in flight and strike its node's agent,
  or the server, a random fraction of a second into it, while its command runs.
- Some restarted processes are killed again while they start up (an agent between hello and
  welcome, a server while it recovers).
- Before an agent comes back, the server must have noticed that it is gone.

The seed fixes the nemesis's draws (when, whom, how long down); which operation a kill lands
in depends on timing, so a replay reproduces the schedule, not every interleaving.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from tests.chaos.cluster import ChaosError, LocalCluster

log = logging.getLogger(__name__)

SERVER = "server"
AIM_WAIT = 1.5  # seconds an aimed kill waits for a task in flight, at most
AIM_OFFSET = (0.0, 0.3)  # then how far into the task it strikes (seconds)
AGAIN_AFTER = (0.2, 1.2)  # seconds after its restart
SEEN_GONE_TIMEOUT = 10.0  # for the server to notice that a killed agent is gone


@dataclass(frozen=True)
class NemesisEvent:
    at: float  # seconds since the nemesis started
    action: str  # "kill" | "restart"
    name: str
    pid: int | None

    def __str__(self) -> str:
        return f"{self.at:7.2f}s {self.action:<7} {self.name} (pid {self.pid})"


@dataclass
class Nemesis:
    cluster: LocalCluster
    seed: int
    kill_every: tuple[float, float]
    restart_after: tuple[float, float]
    server_share: float
    # With probability ``aim``, a kill waits (up to AIM_WAIT) for a task in flight and hits
    # its node's agent (or the server), so that kills land while commands run.
    aim: float = 0.0
    busy_node: Callable[[float], str | None] = lambda _timeout: None
    again: float = 0.0  # probability to kill a restarted process again while it starts
    active_for: float | None = None  # stop killing after this many seconds (None: until stop)
    max_down: int = 2
    events: list[NemesisEvent] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _t0: float = 0.0

    @property
    def kills(self) -> int:
        return sum(e.action == "kill" for e in self.events)

    def count(self, name: str) -> int:
        return sum(e.action == "kill" and e.name == name for e in self.events)

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="nemesis", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        """Stop killing; every process it killed is restarted before this returns."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise ChaosError(f"the nemesis did not stop within {timeout:g}s")

    def _note(self, action: str, name: str, pid: int | None) -> None:
        self.events.append(NemesisEvent(time.monotonic() - self._t0, action, name, pid))

    def _run(self) -> None:
        rng = random.Random(f"{self.seed}:nemesis")
        agents = [n for n in self.cluster.names() if n != SERVER]
        down: dict[str, float] = {}  # name -> when to restart it (monotonic)
        again: dict[str, tuple[float, float]] = {}  # name -> (when to kill it again, delay)
        next_kill = time.monotonic() + rng.uniform(*self.kill_every)
        until = None if self.active_for is None else self._t0 + self.active_for
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if until is not None and now >= until:
                    break  # its time is up: restart what is down (below) and rest
                for name, due in sorted(down.items(), key=lambda kv: kv[1]):
                    if due <= now:
                        self._restart(name)
                        del down[name]
                        # Sometimes strike again while it starts up (hello, recovery).
                        when, delay = rng.uniform(*AGAIN_AFTER), rng.uniform(*self.restart_after)
                        if rng.random() < self.again:
                            again[name] = (time.monotonic() + when, delay)
                for name, (due, delay) in sorted(again.items(), key=lambda kv: kv[1]):
                    if due <= now:
                        del again[name]
                        if name not in down and len(down) < self.max_down:
                            self._note("kill", name, self.cluster.kill(name))
                            down[name] = time.monotonic() + delay
                if now >= next_kill:
                    # Draw the same numbers whatever is down, so the schedule stays seeded.
                    server = rng.random() < self.server_share
                    victim = SERVER if server else rng.choice(agents)
                    aim = rng.random() < self.aim
                    offset = rng.uniform(*AIM_OFFSET)
                    delay = rng.uniform(*self.restart_after)
                    next_kill = now + rng.uniform(*self.kill_every)
                    if aim:
                        busy = self.busy_node(AIM_WAIT)
                        if busy is not None:
                            victim = SERVER if server else busy
                            self._stop.wait(offset)  # into the task: its command is running
                    if victim not in down and len(down) < self.max_down:
                        self._note("kill", victim, self.cluster.kill(victim))
                        down[victim] = time.monotonic() + delay
                moments = [next_kill, *down.values(), *(due for due, _ in again.values())]
                if until is not None:
                    moments.append(until)
                wake = min(moments) - time.monotonic()
                self._stop.wait(max(0.0, wake))  # the schedule's next moment, or stop
        except Exception as exc:  # reported by the harness; the run then fails
            log.exception("nemesis failed")
            self.errors.append(f"nemesis: {type(exc).__name__}: {exc}")
        finally:
            for name in list(down):
                try:
                    self._restart(name)
                except Exception as exc:  # noqa: BLE001 - reported by the harness
                    self.errors.append(f"nemesis: restarting {name}: {type(exc).__name__}: {exc}")

    def _restart(self, name: str) -> None:
        if name != SERVER:
            self._check_seen_gone(name)
        self._note("restart", name, self.cluster.restart(name))

    def _check_seen_gone(self, node: str) -> None:
        """Before its agent comes back: a running server must show the node disconnected
        (a dead agent's session must not linger as "connected", or VMs get placed and
        commands sent there for nothing)."""
        if not self.cluster.running(SERVER):
            return  # a restarted server starts with every node disconnected

        def connected() -> bool | None:
            try:
                with self.cluster.api(timeout=5.0) as api:
                    nodes = api.list_all("/nodes")
            except httpx.HTTPError:
                return None  # the server is not answering: nothing to learn now
            return any(n["name"] == node and n["connected"] for n in nodes)

        deadline = time.monotonic() + SEEN_GONE_TIMEOUT
        while connected() and time.monotonic() < deadline:
            time.sleep(0.1)  # polling interval
        if connected():
            self.errors.append(
                f"nemesis: {SEEN_GONE_TIMEOUT:g}s after its agent was SIGKILLed, the server"
                f" still shows {node} connected (a dead session left registered)"
            )
