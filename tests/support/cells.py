"""An in-process deployment with cells for API tests: the API server and two cell servers
(each uvicorn on its own free loopback port, its own database), sim agents per cell, all
talking over real sockets."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import uvicorn

from bollard.cells.assembly import ApiAssembly, prepare_api
from bollard.cells.config import ApiConfig
from tests.support.cluster import DEADLINE, AgentThread, ServerThread, free_port, wait_until
from tests.support.databases import SchemaTemplates, postgres_unavailable


class ApiServerThread:
    def __init__(
        self, data_dir: Path, db_url: str, *, deadline: float = 15.0, cell_wait: float = 4.0
    ) -> None:
        self.config = ApiConfig(
            data_dir=data_dir, db_url=db_url, port=free_port(), cell_deadline=deadline,
            discover_interval=0.5, move_cell_wait=cell_wait,
        )  # fmt: skip
        self.runtime: ApiAssembly = prepare_api(self.config)
        self.server = uvicorn.Server(
            uvicorn.Config(
                self.runtime.app(), host="127.0.0.1", port=self.config.port,
                log_level="warning", lifespan="on",
            )
        )  # fmt: skip
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_until(lambda: self.server.started, "the API server to start")
        self.url = f"http://127.0.0.1:{self.config.port}"
        self.token = (data_dir / "admin.token").read_text().strip()
        self.client = httpx.Client(
            base_url=self.url + "/api/v1",
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
        )

    def stop(self) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(timeout=DEADLINE)
        assert not self.thread.is_alive(), "API server thread did not stop"


class Cells:
    """The API server, cells `cell1` and `cell2` (each with its server and agents
    `<cell>-node1`...) registered with it."""

    def __init__(self, api: ApiServerThread, cells: dict[str, ServerThread]) -> None:
        self.api = api
        self.cells = cells
        self.agents: dict[str, list[AgentThread]] = {name: [] for name in cells}

    @property
    def client(self) -> httpx.Client:
        return self.api.client

    def register(self, name: str) -> None:
        server = self.cells[name]
        answer = self.client.post(
            "/cells", json={"name": name, "url": server.url, "token": server.token}
        )
        assert answer.status_code == 201, answer.text

    def add_agent(self, cell: str, node: str, base: Path, **options: object) -> AgentThread:
        server = self.cells[cell]
        (base / cell).mkdir(exist_ok=True)
        agent = AgentThread(server, node, base / cell, vcpus=8, memory_mb=16384, **options)
        wait_until(
            lambda: server.client.get(f"/nodes/{node}").json()["connected"], f"{node} to connect"
        )
        self.agents[cell].append(agent)
        return agent

    def wait_mapped(self, node: str) -> None:
        """Until the API server has learnt which cell `node` is in."""
        wait_until(
            lambda: any(
                node in c.get("node_names", [])
                for c in (self.client.get(f"/cells/{n}").json() for n in self.cells)
            ),
            f"{node} to be mapped",
        )

    def stop_cell(self, name: str) -> None:
        for agent in self.agents.pop(name, []):
            agent.stop()
        self.cells[name].stop()


def cell_db_urls(templates: SchemaTemplates, tmp: Path, count: int, stack: ExitStack) -> list[str]:
    """`count` databases: PostgreSQL where one answers, else SQLite files."""
    if postgres_unavailable() is None:
        return [stack.enter_context(templates.postgres()) for _ in range(count)]
    urls = []
    for i in range(count):
        directory = tmp / f"db{i}"
        directory.mkdir()
        urls.append(templates.sqlite(directory))
    return urls


@contextmanager
def running_cells(
    templates: SchemaTemplates, tmp: Path, *, nodes: int = 1, deadline: float = 15.0
) -> Iterator[Cells]:
    with ExitStack() as stack:
        api_url, *urls = cell_db_urls(templates, tmp, 3, stack)
        servers: dict[str, ServerThread] = {}
        for i, url in enumerate(urls, start=1):
            servers[f"cell{i}"] = ServerThread(tmp / f"cell{i}", url)
        api = ApiServerThread(tmp / "api", api_url, deadline=deadline)
        deployment = Cells(api, servers)
        try:
            for name in servers:
                deployment.register(name)
                for j in range(1, nodes + 1):
                    deployment.add_agent(name, f"{name}-node{j}", tmp)
            for name in servers:
                for j in range(1, nodes + 1):
                    deployment.wait_mapped(f"{name}-node{j}")
            yield deployment
        finally:
            for name in list(deployment.agents):
                for agent in deployment.agents[name]:
                    agent.stop()
            api.stop()
            for server in servers.values():
                if server.thread.is_alive():
                    server.stop()
