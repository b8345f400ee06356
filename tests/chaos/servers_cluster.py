"""The cluster of a three-server chaos run: `bollard up --servers N --db postgresql://...`
(N servers sharing one PostgreSQL database, agents that know every server's address), each
server with a short lease (`--lease-ttl`) and its database connection through a proxy of
the harness's own (`--server-db`, once per server), which the nemesis cuts.

The proxies start before `bollard up`; the processes are then what cluster.json says, as in
the one-server harness (`bollard up --restart-process` starts one again after a kill).

A server's id (`GET /servers`) changes at every start; its process is found by its port.
"""

from __future__ import annotations

import random
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from tests.chaos.cluster import (
    UP_TIMEOUT,
    Api,
    ChaosError,
    LocalCluster,
    poll_until,
)
from tests.chaos.dbproxy import DbProxy

VIEW_TIMEOUT = 2.0  # seconds one server gets to answer GET /servers, before the next is asked
READY_TIMEOUT = 60.0  # after `bollard up`: every server up, a leader, every agent connected
AGENT_RECONNECT_MAX = 2.0  # `bollard up --agent-reconnect-max`: agents find a live server fast


def consecutive_free_ports(count: int, attempts: int = 200) -> int:
    """The first of ``count`` consecutive free loopback ports (`bollard up --servers` takes
    --port and the next ones), drawn below the kernel's ephemeral range: there, an outgoing
    connection of the first server (to the database) could take the next one's port before
    it binds it (`address already in use`, seen)."""
    try:
        ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral = 32768
    low, high = 10000, max(ephemeral, 10000 + 2 * count) - count
    for _ in range(attempts):
        first = random.randrange(low, high)
        socks = []
        try:
            for port in range(first, first + count):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise ChaosError(f"no {count} consecutive free ports found in {attempts} attempts")


def _with_option(argv: list[str], option: str, value: str) -> list[str]:
    """``argv`` with ``option value`` set (replaced where it is, appended otherwise)."""
    if option in argv:
        at = argv.index(option)
        return [*argv[: at + 1], value, *argv[at + 2 :]]
    return [*argv, option, value]


def _via(db_url: str, port: int) -> str:
    """``db_url`` pointed at 127.0.0.1:``port`` (the proxy), user and database kept."""
    parts = urlsplit(db_url)
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{port}"))


@dataclass
class ServersCluster(LocalCluster):
    """``servers`` servers (processes server1..serverN) on ``db_url``, and sim agents."""

    db_url: str = ""
    servers: int = 3
    lease_ttl: float = 5.0
    ports: dict[str, int] = field(default_factory=dict)  # process name -> port
    proxies: dict[str, DbProxy] = field(default_factory=dict)  # process name -> its proxy

    @property
    def server_names(self) -> list[str]:
        return [f"server{k}" for k in range(1, self.servers + 1)]

    def url_of(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def name_at(self, url: str) -> str | None:
        """The process serving at ``url`` (a server's advertised address)."""
        port = urlsplit(url).port
        return next((n for n, p in self.ports.items() if p == port), None)

    def live_urls(self) -> list[str]:
        return [self.url_of(n) for n in self.server_names if self.running(n)]

    def cut_during(self, url: str, since: float) -> bool:
        name = self.name_at(url)
        proxy = self.proxies.get(name) if name else None
        return proxy is not None and (proxy.mode is not None or proxy.healed_at >= since)

    def up(self, nodes: int, sim_latency: float, heartbeat: float, *extra: str) -> None:
        upstream = urlsplit(self.db_url)
        for name in self.server_names:
            proxy = DbProxy(upstream.hostname or "127.0.0.1", upstream.port or 5432, f"db-{name}")
            self.proxies[name] = proxy  # (closed by down, even if it or `bollard up` fails)
            proxy.start()
        through = [
            arg
            for name in self.server_names
            for arg in ("--server-db", _via(self.db_url, self.proxies[name].port))
        ]
        port = consecutive_free_ports(self.servers)
        started = self.cli(
            "up", "--detach", "--servers", str(self.servers), "--db", self.db_url, *through,
            "--lease-ttl", f"{self.lease_ttl:g}",
            "--nodes", str(nodes), "--sim-latency", f"{sim_latency:g}",
            "--heartbeat", f"{heartbeat:g}", "--data-dir", str(self.data_dir),
            "--port", str(port), "--insecure-http",
            "--agent-reconnect-max", f"{AGENT_RECONNECT_MAX:g}", *extra,
            timeout=UP_TIMEOUT,
        )  # fmt: skip
        if started.returncode != 0:
            raise ChaosError(
                f"bollard up --servers {self.servers} failed ({started.returncode}):\n"
                f"{started.stdout}\n{started.stderr}\n" + self.log_tails()
            )
        self.ports = {name: port + k for k, name in enumerate(self.server_names)}
        self.url = self.url_of(self.server_names[0])
        self.token = (self.data_dir / "admin.token").read_text().strip()
        self.wait_ready(READY_TIMEOUT, nodes)

    def wait_ready(self, timeout: float, nodes: int) -> None:
        """Every server up (in GET /servers) with a leader among them, every agent
        connected: how the run starts, and how it must end."""

        def ready() -> dict[str, Any] | None:
            view = self.view()
            if view is None or not self.complete(view, nodes):
                return None
            return view

        poll_until(f"{self.servers} servers are up with a leader and every agent", ready, timeout)

    def complete(self, view: dict[str, Any], nodes: int) -> bool:
        up = [s for s in view["items"] if s["state"] == "up"]
        names = {self.name_at(s["url"]) for s in up}
        return (
            len(up) == self.servers
            and names == set(self.server_names)
            and any(s["id"] == view["leader"] for s in up)
            and sum(s["agents"] for s in up) == nodes
        )

    def view(self, timeout: float = VIEW_TIMEOUT) -> dict[str, Any] | None:
        """GET /servers from the first live server that answers (they are asked in a random
        order); None if none does."""
        urls = self.live_urls()
        random.shuffle(urls)
        for url in urls:
            try:
                with Api(url, self.token, timeout) as api:
                    found: dict[str, Any] = api.get("/servers")
                    return found
            except httpx.HTTPError:
                continue
        return None

    def answering_api(self, timeout: float = 15.0) -> Api:
        """An API client on a live server that answers /healthz (the first server if all
        run)."""
        for url in sorted(self.live_urls()):
            try:
                if httpx.get(url + "/healthz", timeout=VIEW_TIMEOUT).status_code == 200:
                    return Api(url, self.token, timeout)
            except httpx.TransportError:
                continue
        raise ChaosError("no server answers /healthz")

    def _wait_healthy_one(self, name: str, timeout: float) -> None:
        url = self.url_of(name)

        def healthy() -> bool:
            try:
                return httpx.get(url + "/healthz", timeout=2.0).status_code == 200
            except httpx.TransportError:
                return False

        poll_until(f"{name} answers /healthz", healthy, timeout)

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for name in self.server_names:
            self._wait_healthy_one(name, max(1.0, deadline - time.monotonic()))

    def heal_all(self) -> None:
        for proxy in self.proxies.values():
            if proxy.mode is not None:
                proxy.heal()

    def down(self) -> str:
        """Heal every cut (a server stops cleanly only with its database), `bollard down`,
        then close the proxies."""
        notes = []
        try:
            self.heal_all()
        except Exception as exc:  # noqa: BLE001 - noted; the processes must go down anyway
            notes.append(f"healing the database cuts: {type(exc).__name__}: {exc}")
        notes.append(super().down())
        for proxy in self.proxies.values():
            proxy.close()
        return "; ".join(n for n in notes if n)
