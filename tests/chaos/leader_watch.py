"""Watching the leader through a three-server run: how long the cluster-wide duties go
without a leader after the nemesis kills (or cuts off) the one that held them.

A thread asks ``GET /servers`` every ``every`` seconds, of a live server drawn at random
(the next one if it does not answer within a second and a half: a server cut from the
database hangs), and records who leads. The failover of a leader lost at time T is the time
from T to the first answer naming another leader, taken at the middle of that request (its
answer describes some moment between sending and receiving). Its bound: two lease periods.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field

import httpx

from tests.chaos.cluster import Api
from tests.chaos.servers_cluster import ServersCluster
from tests.chaos.servers_nemesis import LeaderLoss

ASK_TIMEOUT = 1.5


@dataclass(frozen=True)
class Seen:
    at: float  # monotonic, the middle of the request
    leader: str | None  # the leader's id
    leader_name: str | None  # its process (server1, ...)


@dataclass(frozen=True)
class Failover:
    loss: LeaderLoss
    seconds: float | None  # None: no other leader seen before the watch stopped
    successor: str | None  # the new leader's process

    def describe(self, t0: float) -> str:
        took = "never" if self.seconds is None else f"after {self.seconds:.2f}s"
        return (
            f"{self.loss.at - t0:7.2f}s {self.loss.how} of leader {self.loss.name} "
            f"({self.loss.leader_id}): another leader ({self.successor or '-'}) {took}"
        )


@dataclass
class LeaderWatch:
    cluster: ServersCluster
    every: float = 0.25
    seen: list[Seen] = field(default_factory=list)
    asked: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="leader-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        rng = random.Random(0)  # which server answers does not matter; no need to seed it
        apis: dict[str, Api] = {}
        try:
            while not self._stop.wait(self.every):
                urls = self.cluster.live_urls()
                rng.shuffle(urls)
                for url in urls:
                    api = apis.get(url) or apis.setdefault(
                        url, self.cluster.api_at(url, timeout=ASK_TIMEOUT)
                    )
                    sent = time.monotonic()
                    try:
                        view = api.get("/servers")
                    except httpx.HTTPError:
                        continue
                    self.asked += 1
                    leader = view["leader"]
                    url_of = {s["id"]: s["url"] for s in view["items"]}
                    name = self.cluster.name_at(url_of[leader]) if leader in url_of else None
                    self.seen.append(Seen((sent + time.monotonic()) / 2, leader, name))
                    break
        finally:
            for api in apis.values():
                api.close()

    def failovers(self, losses: list[LeaderLoss]) -> list[Failover]:
        return failovers(self.seen, losses)


def failovers(seen: list[Seen], losses: list[LeaderLoss]) -> list[Failover]:
    """For each loss of the leader, the first look after it that named another leader."""
    found = []
    for loss in losses:
        after = (
            s
            for s in seen
            if s.at >= loss.at and s.leader is not None and s.leader != loss.leader_id
        )
        first = next(after, None)
        found.append(
            Failover(
                loss,
                None if first is None else first.at - loss.at,
                None if first is None else first.leader_name,
            )
        )
    return found
