"""The agent gateway under abuse: raw WebSocket sessions that send what no honest agent sends
(answers for other nodes' commands, floods of progress, out-of-range numbers, binary and
oversized frames, an unknown protocol version), against a real server on SQLite and
PostgreSQL. In every test the server stays up, and another node's real agent stays connected
on its first session and keeps working."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import time
import uuid as uuids
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest
from websockets.asyncio.client import ClientConnection, connect

from bollard.domain.protocol import AGENT_PATH, MAX_AGENT_MESSAGE, PROTOCOL_VERSION
from bollard.domain.states import DesiredPower, VmState
from bollard.server import gateway
from bollard.server.clock import Clock, LogBudget
from bollard.server.gateway import AgentConnection
from bollard.store import host_vms, nodes, vms
from tests.api.test_api_vms import _wait
from tests.support.cluster import DEADLINE, AgentThread, ServerThread, wait_until

T = TypeVar("T")
BEAT = 0.2  # seconds between a raw agent's background heartbeats


class LoopThread:
    """An event loop in a thread of its own: raw sessions keep beating (and reading) while
    the test waits on the HTTP API."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = DEADLINE) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.run(self._cancel_all())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(DEADLINE)
        self.loop.close()

    @staticmethod
    async def _cancel_all() -> None:
        """Ends every raw session's tasks and connection (websockets' own tasks included)."""
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.close()


def vm_report(name: str, **changes: Any) -> dict[str, Any]:
    report = {"uuid": str(uuids.uuid4()), "name": name, "power": "running", "vcpus": 1,
              "memory_mb": 128, "epoch": 1}  # fmt: skip
    return report | changes


class RawAgent:
    """A hand-driven agent session: enrolled through the API, it says hello, then beats in the
    background (a full report, then empty deltas) so that its node stays up, and keeps what
    the server sends in an inbox. Its methods are called from the test's thread."""

    def __init__(self, server: ServerThread, loop: LoopThread, node: str) -> None:
        self.server, self.loop, self.node = server, loop, node
        answer = server.client.post("/nodes", json={"name": node})
        assert answer.status_code == 201, answer.text
        self.token = answer.json()["token"]
        self.vms: list[dict[str, Any]] = []  # what the background reports say
        self.seq = 0
        self.acked: set[str] = set()
        self.ws: ClientConnection | None = None
        self._inbox: asyncio.Queue[dict[str, Any]] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def hello(self, **changes: Any) -> dict[str, Any]:
        hello = {"type": "hello", "node": self.node, "incarnation": f"i-{self.node}",
                 "boot_id": f"b-{self.node}", "driver": "sim", "protocol": PROTOCOL_VERSION,
                 "capacity": {"vcpus": 64, "memory_mb": 65536}}  # fmt: skip
        return hello | changes

    def connect(self, **hello_changes: Any) -> dict[str, Any]:
        """Dial and say hello; the server's first answer (a welcome starts the beating)."""
        return self.loop.run(self._connect(self.hello(**hello_changes)))

    async def _connect(self, hello: dict[str, Any]) -> dict[str, Any]:
        url = self.server.url.replace("http", "ws") + AGENT_PATH
        self.ws = await connect(
            url, additional_headers={"Authorization": f"Bearer {self.token}"}, max_size=None
        )
        await self.ws.send(json.dumps(hello))
        first: dict[str, Any] = json.loads(await asyncio.wait_for(self.ws.recv(), DEADLINE))
        if first["type"] == "welcome":
            self._inbox = asyncio.Queue()
            await self._beat(full=True)
            self._tasks = [asyncio.create_task(self._read()), asyncio.create_task(self._beats())]
        return first

    async def _read(self) -> None:
        assert self.ws is not None and self._inbox is not None
        async for raw in self.ws:
            msg = json.loads(raw)
            if msg["type"] == "ack":
                self.acked.update(msg["entries"])
            await self._inbox.put(msg)

    async def _beats(self) -> None:
        while True:
            await asyncio.sleep(BEAT)  # a periodic heartbeat, as an agent sends it
            await self._beat(full=False)

    async def _beat(self, full: bool, **fields: Any) -> None:
        assert self.ws is not None
        self.seq += 1
        beat = {"type": "heartbeat", "seq": self.seq, "sent_at": time.time(), "full": full,
                "vms": self.vms if full else []} | fields  # fmt: skip
        await self.ws.send(json.dumps(beat))

    def report(self, **fields: Any) -> None:
        """A full report of `self.vms` now (with `fields` added, e.g. a journal)."""
        self.loop.run(self._beat(full=True, **fields))

    def send(self, *messages: dict[str, Any] | str | bytes) -> None:
        self.loop.run(self._send(messages))

    async def _send(self, messages: tuple[dict[str, Any] | str | bytes, ...]) -> None:
        assert self.ws is not None
        for msg in messages:
            await self.ws.send(json.dumps(msg) if isinstance(msg, dict) else msg)

    def expect(self, kind: str, timeout: float = DEADLINE) -> dict[str, Any]:
        """The next message of type `kind` (those of other types before it are passed over)."""
        return self.loop.run(self._expect(kind), timeout + 1)

    async def _expect(self, kind: str) -> dict[str, Any]:
        assert self._inbox is not None
        async with asyncio.timeout(DEADLINE):
            while True:
                msg = await self._inbox.get()
                if msg["type"] == kind:
                    return msg

    def barrier(self) -> None:
        """Returns once the server has handled everything sent before: a session's messages
        are handled in order, and a second hello is answered with an error."""
        self.send(self.hello())
        assert self.expect("error")["message"] == "hello was already received"

    def close(self) -> None:
        self.loop.run(self._close())

    async def _close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self.ws is not None:
            await self.ws.close()


class Keeper:
    """A real agent on another node: it must stay connected, on its first session, and keep
    working, whatever the raw sessions do."""

    def __init__(self, server: ServerThread, tmp_path: Path) -> None:
        self.server = server
        self.agent = AgentThread(server, "keeper", tmp_path)
        self.session: AgentConnection = wait_until(
            lambda: server.runtime.gateway.sessions.get("keeper"), "keeper to connect"
        )
        # (The session is registered before its record says connected: wait for both.)
        wait_until(
            lambda: server.client.get("/nodes/keeper").json()["connected"], "keeper recorded"
        )
        self.probes = 0

    def assert_unharmed(self) -> None:
        c = self.server.client
        assert self.server.thread.is_alive()
        assert c.get("/nodes/keeper").json()["connected"]
        assert self.server.runtime.gateway.sessions.get("keeper") is self.session
        self.probes += 1
        body = {"name": f"probe-{self.probes}", "vcpus": 1, "memory_mb": 128, "node": "keeper",
                "start": True}  # fmt: skip
        assert _wait(c, c.post("/vms", json=body))["state"] == "succeeded"

    def stop(self) -> None:
        self.agent.stop()


@pytest.fixture
def keeper(server: ServerThread, tmp_path: Path) -> Iterator[Keeper]:
    kept = Keeper(server, tmp_path)
    yield kept
    kept.stop()


def _up(server: ServerThread, node: str) -> None:
    wait_until(lambda: server.client.get(f"/nodes/{node}").json()["health"] == "up", f"{node} up")


def _last_seq(server: ServerThread, node: str) -> int:
    with server.runtime.db.read() as conn:
        return nodes.get(conn, node).last_seq


def _lines(caplog: pytest.LogCaptureFixture, logger: str, pattern: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == logger and re.search(pattern, r.getMessage())
    ]


# -- defect 1: only the node a command was sent to may answer it ------------------------------


def test_only_the_node_a_command_was_sent_to_may_answer_it(
    server: ServerThread, loop: LoopThread, keeper: Keeper, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    victim, intruder = RawAgent(server, loop, "victim"), RawAgent(server, loop, "intruder")
    assert victim.connect()["type"] == "welcome"
    assert intruder.connect()["type"] == "welcome"
    _up(server, "victim")
    body = {"name": "target", "vcpus": 1, "memory_mb": 128, "node": "victim"}
    created = server.client.post("/vms", json=body)
    assert created.status_code == 202, created.text
    command = victim.expect("command")
    cid = command["id"]
    assert command["command"] == "define"

    entry = {"command_id": cid, "command": "define", "state": "COMPLETED", "ok": True,
             "result": {}, "received_at": time.time(), "updated_at": time.time()}  # fmt: skip
    forged: list[dict[str, Any]] = [
        {"type": "answer", "command_id": cid, "ok": True, "result": {"forged": True}},
        {
            "type": "answer",
            "command_id": cid,
            "ok": False,
            "error": {"code": "interrupted", "message": "forged"},
        },
        {"type": "progress", "command_id": cid, "fraction": 0.9, "message": "forged"},
    ]
    for msg in forged:
        intruder.send(msg)
        error = intruder.expect("error")
        assert error["code"] == "not-yours" and cid in error["message"], error
    intruder.report(journal=[entry])
    assert intruder.expect("error")["code"] == "not-yours"
    intruder.barrier()
    assert cid not in intruder.acked  # never acknowledged as stored

    shown = server.client.get(f"/commands/{cid}").json()
    assert (shown["state"], shown["answer"]) == ("SENT", None)
    assert server.runtime.dispatcher.progress(cid) is None
    refused = _lines(caplog, "bollard.server.dispatch", "other nodes, refused")
    assert len(refused) == 4  # one line for each refused message
    assert all("intruder" in line and cid in line and len(line) < 200 for line in refused)

    # The node the command was sent to is heard: its progress, then its answer.
    victim.send({"type": "progress", "command_id": cid, "fraction": 0.5, "message": "half"})
    victim.barrier()
    progress = server.runtime.dispatcher.progress(cid)
    assert progress is not None and progress.fraction == 0.5
    failure = {"code": "refused", "message": "the test says no"}
    victim.send({"type": "answer", "command_id": cid, "ok": False, "error": failure})
    wait_until(
        lambda: server.client.get(f"/commands/{cid}").json()["state"] == "FAILED",
        "the victim's own answer to count",
    )
    assert server.client.get(f"/commands/{cid}").json()["answer"]["error"] == failure
    wait_until(lambda: server.runtime.dispatcher.progress_held == 0, "progress to be forgotten")
    assert server.runtime.gateway.sessions.get("intruder") is not None
    keeper.assert_unharmed()


def test_only_the_node_asked_may_answer_a_query_or_an_inspect(
    server: ServerThread, loop: LoopThread, keeper: Keeper
) -> None:
    victim, intruder = RawAgent(server, loop, "asked"), RawAgent(server, loop, "meddler")
    victim.vms = _seed(server, "asked", ["shown"])
    assert victim.connect()["type"] == "welcome"
    assert intruder.connect()["type"] == "welcome"
    _up(server, "asked")
    report = victim.vms[0]

    # An inspect (here for the VM's console): only the host asked is heard.
    answers: list[Any] = []
    asking = threading.Thread(
        target=lambda: answers.append(server.client.get("/vms/shown/console")), daemon=True
    )
    asking.start()
    inspect = victim.expect("inspect")
    forged = {"type": "inspect_result", "query_id": inspect["query_id"],
              "vm_uuid": report["uuid"], "vm": report, "console": "FORGED"}  # fmt: skip
    intruder.send(forged)
    intruder.barrier()
    victim.send(forged | {"console": "REAL"})
    asking.join(DEADLINE)
    assert answers[0].status_code == 200 and answers[0].json()["log"] == "REAL"

    # A reconciler's query about a command: only the node the command was sent to is heard.
    started = server.client.post("/vms/shown/stop")
    assert started.status_code == 202, started.text
    cid = victim.expect("command")["id"]
    interrupted = {"code": "interrupted", "message": "the agent restarted"}
    victim.send({"type": "answer", "command_id": cid, "ok": False, "error": interrupted})
    query = victim.expect("query")
    entry = {"command_id": cid, "command": "stop", "state": "COMPLETED", "ok": True,
             "result": {"forged": True}, "received_at": 1.0, "updated_at": 2.0}  # fmt: skip
    result = {"type": "query_result", "query_id": query["query_id"], "command_id": cid}
    intruder.send(result | {"entry": entry})
    intruder.barrier()
    assert server.client.get(f"/commands/{cid}").json()["answer"] is None
    victim.send(result | {"entry": None, "vm": report})  # never received: it did not happen
    shown = wait_until(
        lambda: (c := server.client.get(f"/commands/{cid}").json())["answer"] is not None and c,
        "the command to be reconciled from the node it was sent to",
    )
    assert shown["answer"]["ok"] is False
    assert shown["answer"]["error"]["code"] == "never-received"
    keeper.assert_unharmed()


# -- defect 2: progress for unknown commands is not kept ---------------------------------------


def test_progress_for_commands_nobody_awaits_is_dropped(
    server: ServerThread, loop: LoopThread, keeper: Keeper, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    chatty = RawAgent(server, loop, "chatty")
    assert chatty.connect()["type"] == "welcome"
    session = server.runtime.gateway.sessions["chatty"]
    flood = [
        {"type": "progress", "command_id": str(uuids.uuid4()), "fraction": 0.5, "message": "x"}
        for _ in range(3000)
    ]
    chatty.send(*flood)
    chatty.barrier()
    assert server.runtime.dispatcher.progress_held == 0
    dropped = _lines(
        caplog, "bollard.server.dispatch", "progress for a command nobody awaits dropped"
    )
    assert 1 <= len(dropped) <= 5  # rate-limited, not one line per message
    assert server.runtime.gateway.sessions.get("chatty") is session
    keeper.assert_unharmed()


# -- defect 5: bad values get an error reply; the session lives on -----------------------------


def _beat(**fields: Any) -> dict[str, Any]:
    beat = {"type": "heartbeat", "seq": 10**6, "sent_at": time.time(), "vms": []}
    return beat | fields


def _entry(**fields: Any) -> dict[str, Any]:
    entry = {"command_id": "c-1", "command": "start", "state": "COMPLETED", "ok": True,
             "received_at": 1.0, "updated_at": 2.0}  # fmt: skip
    return entry | fields


TWIN = vm_report("twin")
_ANSWER = '{"type": "answer", "command_id": "c", "ok": true, "result": '
# fmt: off
BAD: list[tuple[str, dict[str, Any] | str | bytes]] = [
    ("seq over 64 bits", _beat(seq=2**64)),
    ("seq over 63 bits", _beat(seq=2**63)),
    ("negative seq", _beat(seq=-1)),
    ("seq not a number", _beat(seq="seven")),
    ("sent_at not finite", json.dumps(_beat()).replace('"sent_at": ', '"sent_at": NaN, "x": ')),
    ("load infinite", json.dumps(_beat()).replace('"vms"', '"load": Infinity, "vms"')),
    ("vcpus over 64 bits", _beat(vms=[vm_report("a", vcpus=2**64)])),
    ("memory over 32 bits", _beat(vms=[vm_report("a", memory_mb=2**31)])),
    ("negative epoch", _beat(vms=[vm_report("a", epoch=-1)])),
    ("uuid too long", _beat(vms=[vm_report("a", uuid="u" * 37)])),
    ("name with NUL", _beat(vms=[vm_report("a\u0000b")])),
    ("unknown power", _beat(vms=[vm_report("a", power="exploded")])),
    ("a VM twice", _beat(vms=[TWIN, TWIN])),
    ("a VM changed and gone", _beat(full=False, vms=[TWIN], gone=[TWIN["uuid"]])),
    ("vms not a list", _beat(vms={"a": 1})),
    ("too many gone", _beat(full=False, gone=[f"g{i}" for i in range(20_001)])),
    ("journal entry epoch over 32 bits", _beat(journal=[_entry(epoch=2**40)])),
    ("journal entry with NaN",
     json.dumps(_beat(journal=[_entry(received_at="@")])).replace('"@"', "NaN")),
    ("answer result over 64 bits", _ANSWER + '{"n": [' + str(2**70) + "]}}"),
    ("answer result with NaN", _ANSWER + '{"n": NaN}}'),
    ("answer result with NUL", _ANSWER + '{"k\\u0000": 1}}'),
    ("answer nested deep", _ANSWER + '{"a": ' * 100 + "1" + "}" * 100 + "}"),
    ("JSON nested deeper than the parser goes", "[" * 100_000),
    ("progress message too long",
     {"type": "progress", "command_id": "c", "fraction": 0.5, "message": "m" * 70_000}),
    ("progress fraction over 1", {"type": "progress", "command_id": "c", "fraction": 2}),
    ("a binary frame", b"\x00\x01binary"),
    ("a binary frame holding JSON", json.dumps(_beat()).encode()),
    ("not JSON", "hello?"),
    ("a JSON array", "[1, 2]"),
    ("a JSON string", '"heartbeat"'),
    ("no type", {"seq": 1}),
    ("an unknown type", {"type": "exploit"}),
]
# fmt: on


def test_bad_values_are_refused_with_an_error_and_the_session_lives_on(
    server: ServerThread, loop: LoopThread, keeper: Keeper
) -> None:
    raw = RawAgent(server, loop, "rogue")
    raw.vms = [vm_report("good")]
    assert raw.connect()["type"] == "welcome"
    session = server.runtime.gateway.sessions["rogue"]
    for what, msg in BAD:
        raw.send(msg)
        error = raw.expect("error")
        assert error["code"] == "malformed", (what, error)
        assert "\n" not in error["message"] and len(error["message"]) < 300, (what, error)
        assert server.runtime.gateway.sessions.get("rogue") is session, what
    raw.barrier()
    # The session still works: a good report is stored, and none of the bad ones was.
    raw.report()
    wait_until(lambda: _last_seq(server, "rogue") == raw.seq, "the good report to be stored")
    assert _last_seq(server, "rogue") < 2**63
    with server.runtime.db.read() as conn:
        assert [r.name for r in host_vms.on_node(conn, "rogue")] == ["good"]
    keeper.assert_unharmed()


def test_error_replies_say_what_was_wrong(server: ServerThread, loop: LoopThread) -> None:
    raw = RawAgent(server, loop, "clear")
    assert raw.connect()["type"] == "welcome"
    cases: list[tuple[dict[str, Any] | bytes, str]] = [
        (_beat(seq=2**64), "heartbeat message refused: seq must be at most 9223372036854775807"),
        (
            _beat(vms=[vm_report("a"), vm_report("b", vcpus=-1)]),
            "heartbeat message refused: vms[1].vcpus must be at least 0",
        ),
        (b"\x01", "binary frame refused: only JSON text frames are accepted"),
        ({"type": "exploit"}, "message refused: unknown message type 'exploit'"),
    ]
    for msg, said in cases:
        raw.send(msg)
        assert raw.expect("error")["message"].startswith(said)


def test_a_hello_with_bad_values_is_refused_and_the_node_can_connect_again(
    server: ServerThread, loop: LoopThread, keeper: Keeper
) -> None:
    raw = RawAgent(server, loop, "newcomer")
    bad_hellos: list[dict[str, Any]] = [
        {"capacity": {"vcpus": 2**64, "memory_mb": 1}},
        {"capacity": {"vcpus": 4, "memory_mb": 2**31}},
        {"journal_entries": -1},
        {"corrupt_entries": 2**63},
        {"protocol": 2**64},
        {"incarnation": "i" * 1000},
        {"boot_id": "b\u0000"},
        {"migration_endpoint": {"port": 2**70}},
    ]
    for changes in bad_hellos:
        first = raw.connect(**changes)
        assert (first["type"], first["code"]) == ("error", "malformed"), (changes, first)
        assert first["message"].startswith("the first message must be a valid hello"), first
        assert "newcomer" not in server.runtime.gateway.sessions
    binary = loop.run(_hello_frame(server, raw.token, b"\x00"))
    assert binary["type"] == "error" and "binary frame" in binary["message"]
    assert raw.connect()["type"] == "welcome"
    keeper.assert_unharmed()


async def _hello_frame(server: ServerThread, token: str, frame: bytes) -> dict[str, Any]:
    url = server.url.replace("http", "ws") + AGENT_PATH
    async with connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        await ws.send(frame)
        answer: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), DEADLINE))
        return answer


# -- limits: frame size, and malformed frames are logged once, truncated -----------------------


def test_an_oversized_frame_is_refused_and_refusals_are_logged_once_truncated(
    server: ServerThread, loop: LoopThread, keeper: Keeper, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    raw = RawAgent(server, loop, "loud")
    assert raw.connect()["type"] == "welcome"
    session = server.runtime.gateway.sessions["loud"]
    huge = json.dumps(_beat(vms="V" * (MAX_AGENT_MESSAGE + 1)))
    raw.send(huge)
    error = raw.expect("error")
    assert error["code"] == "too-big" and str(MAX_AGENT_MESSAGE) in error["message"]
    # A malformed frame whose bad value is a megabyte long is logged once, truncated.
    raw.send(json.dumps(_beat(seq="S" * 1_000_000)))
    assert raw.expect("error")["code"] == "malformed"
    raw.barrier()
    lines = [r.getMessage() for r in caplog.records if r.name == "bollard.server.gateway"]
    refused = [line for line in lines if "refused" in line]
    assert len(refused) == 2, refused
    assert all(len(line) < 700 for line in lines), max(len(line) for line in lines)
    assert "S" * 300 not in " ".join(lines) and "V" * 300 not in " ".join(lines)
    assert server.runtime.gateway.sessions.get("loud") is session
    keeper.assert_unharmed()


def test_refusal_log_lines_are_rate_limited_per_node(
    server: ServerThread, loop: LoopThread, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    raw = RawAgent(server, loop, "spammer")
    assert raw.connect()["type"] == "welcome"
    raw.send(*["not JSON"] * 200)
    for _ in range(200):
        raw.expect("error")
    lines = _lines(caplog, "bollard.server.gateway", "node spammer: message refused")
    assert 1 <= len(lines) <= 5


class FakeClock:
    def __init__(self) -> None:
        self.at = 100.0

    def monotonic(self) -> float:
        return self.at


def test_a_log_budget_holds_lines_back_and_counts_them() -> None:
    clock = FakeClock()
    budget = LogBudget(cast(Clock, clock), burst=2, window=60.0)
    assert [budget.take("n1") for _ in range(5)] == [0, 0, None, None, None]
    assert budget.take("n2") == 0  # per key
    clock.at += 60.0
    assert budget.take("n1") == 3  # the next line says how many were held back
    assert budget.take("n1") == 0
    assert budget.take("n1") is None


# -- defect 7: the protocol version is checked ------------------------------------------------


def test_an_unsupported_protocol_version_is_refused_naming_both(
    server: ServerThread, loop: LoopThread, keeper: Keeper
) -> None:
    raw = RawAgent(server, loop, "future")
    first = raw.connect(protocol=PROTOCOL_VERSION + 1)
    assert (first["type"], first["code"]) == ("error", "protocol-version")
    assert f"agent protocol {PROTOCOL_VERSION + 1} is not supported" in first["message"]
    assert f"this server speaks agent protocol {PROTOCOL_VERSION}" in first["message"]
    assert "future" not in server.runtime.gateway.sessions
    assert raw.connect()["type"] == "welcome"
    keeper.assert_unharmed()


def test_an_agent_refused_for_its_version_says_so_and_retries_slowly(
    server: ServerThread,
    keeper: Keeper,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(gateway, "SUPPORTED_PROTOCOLS", frozenset({99}))
    caplog.set_level(logging.INFO)
    # A fast backoff, to show the refusal is what slows the agent down.
    agent = AgentThread(server, "old", tmp_path, backoff_initial=0.01, backoff_max=30.0)
    try:
        said = wait_until(
            lambda: _lines(caplog, "bollard.agent.session", "refused this agent"),
            "the agent to log its refusal",
        )
        assert f"agent protocol {PROTOCOL_VERSION} is not supported" in said[0]
        assert "speaks agent protocol 99" in said[0]
        assert [r.levelname for r in caplog.records if r.getMessage() == said[0]] == ["ERROR"]
        waits = wait_until(
            lambda: _lines(caplog, "bollard.agent.session", "reconnecting in"), "a reconnect"
        )
        seconds = float(re.findall(r"reconnecting in ([0-9.]+)s", waits[0])[0])
        assert seconds >= 15.0  # half the longest backoff at least, not 0.01 s
        assert not server.client.get("/nodes/old").json()["connected"]
    finally:
        agent.stop()
    keeper.assert_unharmed()


# -- limits: a mass change is one event --------------------------------------------------------


def _seed(server: ServerThread, node: str, names: list[str]) -> list[dict[str, Any]]:
    """VM records on `node` (running, no HA), as the database holds VMs it created."""
    reports = []
    now = server.runtime.clock.now()
    with server.runtime.db.write() as conn:
        for name in names:
            report, task = vm_report(name), str(uuids.uuid4())
            vms.create(conn, uuid=report["uuid"], name=name, node=node, vcpus=1, memory_mb=128,
                       desired_power=DesiredPower.RUNNING, task_id=task, now=now,
                       ha="none")  # fmt: skip
            vms.end_task(conn, report["uuid"], task, now, vm_state=VmState.ACTIVE)
            reports.append(report)
    return reports


def _events(server: ServerThread, node: str, kind: str) -> list[dict[str, Any]]:
    items = server.client.get("/events", params={"node": node, "limit": 500}).json()["items"]
    return [e for e in items if e["kind"] == kind]


def test_a_mass_change_in_one_report_is_one_event(
    server: ServerThread, loop: LoopThread, keeper: Keeper
) -> None:
    names = [f"rack-{i:02d}" for i in range(30)]
    raw = RawAgent(server, loop, "rack")
    raw.vms = _seed(server, "rack", names)
    assert raw.connect()["type"] == "welcome"
    _up(server, "rack")
    wait_until(lambda: _last_seq(server, "rack") >= 1, "the first report to be stored")
    scan = server.client.get("/reconcile", params={"node": "rack"}).json()
    assert scan["differences"] == []

    # A few VMs shut off: one event each (below the threshold).
    few = raw.vms[:3]
    for report in few:
        report["power"] = "stopped"
    raw.report()
    wait_until(lambda: len(_events(server, "rack", "reconcile.fixed")) == 3, "3 fixes")
    assert sorted(e["vm"] for e in _events(server, "rack", "reconcile.detected")) == names[:3]

    # The host reboots: every other VM is off at once. One event for the change, one for
    # its fixes, each naming how many VMs and which.
    for report in raw.vms:
        report["power"] = "stopped"
    raw.report()
    wait_until(lambda: len(_events(server, "rack", "reconcile.fixed")) == 4, "the mass fix")
    detected = _events(server, "rack", "reconcile.detected")
    assert len(detected) == 4
    mass = next(e for e in detected if e["vm"] is None)
    assert mass["data"]["count"] == 27 and mass["data"]["class"] == "power"
    assert sorted(mass["data"]["vms"]) == names[3:]
    assert "27 VMs on rack at once" in mass["message"]
    fixed = next(e for e in _events(server, "rack", "reconcile.fixed") if e["vm"] is None)
    assert fixed["data"]["count"] == 27 and sorted(fixed["data"]["vms"]) == names[3:]
    wait_until(
        lambda: all(server.client.get(f"/vms/{n}").json()["status"] == "SHUTOFF" for n in names),
        "every record to follow its host",
    )
    keeper.assert_unharmed()
