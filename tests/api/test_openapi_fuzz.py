"""A property-based fuzz of the whole OpenAPI document (schemathesis) against a real server
with two connected sim nodes and a few VMs.

Schemathesis's engine (what `st run` runs) tests every operation: its coverage phase sends
the boundaries and invalid values of every parameter and field (integers past 64 bits, wrong
types, missing fields, no token), then its fuzzing phase a bounded number of generated
examples, in which path parameters are often the names and ids that exist, so that many
calls get past the lookup. Each answer is checked: no 5xx, and its status, content type and
body are what the document says. Long polls are cut short, so the whole run stays short."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis.engine import Status, from_schema
from schemathesis.engine import events as engine_events
from schemathesis.hooks import GLOBAL_HOOK_DISPATCHER
from schemathesis.schemas import BaseSchema

from tests.support.cluster import AgentThread, ServerThread, wait_until
from tests.support.databases import postgres_database, postgres_unavailable, sqlite_url

# Generated examples per operation; the coverage phase's cases (every parameter's bounds and
# wrong values) come on top, and the test checks that every operation was tested.
MAX_EXAMPLES = 20
LONG_POLL = 0.2  # seconds at most for `wait` (events) and `timeout` (task wait)
SEED = 16
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
)
Known = dict[str, list[str]]


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def fuzzed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerThread, Known]]:
    """The server, with node1 and node2 connected, a few VMs and tasks; and the names and
    ids that exist, by path parameter."""
    base = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            url = sqlite_url(base)
        else:
            reason = postgres_unavailable()
            if reason is not None:
                pytest.skip(reason)
            url = stack.enter_context(postgres_database())
        server = ServerThread(base / "server", url)
        stack.callback(server.stop)
        for node, vcpus, memory in (("node1", 16, 32768), ("node2", 8, 16384)):
            agent = AgentThread(server, node, base, vcpus=vcpus, memory_mb=memory)
            stack.callback(agent.stop)
            wait_until(
                lambda n=node: server.client.get(f"/nodes/{n}").json()["connected"],
                f"{node} to connect",
            )
        yield server, _seed(server)


def _seed(server: ServerThread) -> Known:
    c = server.client
    tasks = []
    for i, start in enumerate((True, False, True)):
        body = {"name": f"vm{i}", "vcpus": 1, "memory_mb": 128, "start": start}
        answer = c.post("/vms", json=body)
        assert answer.status_code == 202, answer.text
        tasks.append(answer.json()["task"]["id"])
    for task in tasks:
        state = c.get(f"/tasks/{task}/wait", params={"timeout": 20}).json()["state"]
        assert state == "succeeded", state
    return {
        "vm": ["vm0", "vm1", "vm2"],
        "node": ["node1", "node2"],
        "task_id": tasks,
        "command_id": [cmd["id"] for cmd in c.get("/commands").json()["items"]][:3],
        "key": [s["key"] for s in c.get("/settings").json()][:8],
    }


def _known(path: str, param: str, known: Known) -> list[str]:
    if param == "name":
        return known["node"] if path.startswith("/api/v1/nodes") else known["vm"]
    return known.get(param, [])


def _schema(server: ServerThread, known: Known) -> BaseSchema:
    config = schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "workers": 1,  # hypothesis imports lazily, and two threads can race there
            "headers": {"Authorization": f"Bearer {server.token}"},
            "request-timeout": 15,
            "suppress-health-check": ["all"],
            "generation": {"max-examples": MAX_EXAMPLES, "database": "none"},
            "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
            "phases": {
                "examples": {"enabled": False},
                "coverage": {"enabled": True},
                "fuzzing": {"enabled": True},
                "stateful": {"enabled": False},
            },
        }
    )
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json", config=config)

    @schema.hook
    def before_generate_path_parameters(
        context: schemathesis.HookContext, strategy: st.SearchStrategy[Any]
    ) -> st.SearchStrategy[Any]:
        """Half the time, the names and ids that exist (else what the document allows)."""
        operation = context.operation
        assert operation is not None
        choices = {p.name: _known(operation.path, p.name, known) for p in operation.path_parameters}
        if not choices or not all(choices.values()):
            return strategy
        existing = st.fixed_dictionaries({n: st.sampled_from(v) for n, v in choices.items()})
        return st.one_of(strategy, existing)

    return schema


def _short_polls(context: schemathesis.HookContext, case: schemathesis.Case, **_: Any) -> None:
    """Long polls end after LONG_POLL seconds and event streams at once (out-of-range values
    are left to be refused); a stream without `max_seconds` would run for an hour."""
    if case.operation.path.endswith("/events/stream"):
        case.query = case.query if case.query is not None else {}
        case.query.setdefault("max_seconds", 0)  # what is there, then the end
    for name in ("wait", "timeout", "max_seconds"):
        value = (case.query or {}).get(name)
        try:
            seconds = float(value)  # a number, or a number as text
        except (TypeError, ValueError):
            continue
        if LONG_POLL < seconds <= 3600:
            case.query[name] = 0 if name == "max_seconds" else LONG_POLL


def _failures(event: engine_events.EngineEvent) -> list[str]:
    if isinstance(event, engine_events.NonFatalError | engine_events.FatalError):
        error = getattr(event, "value", None) or getattr(event, "exception", None)
        return [f"{getattr(event, 'label', 'engine')}: error {error!r}"]
    if not isinstance(event, engine_events.ScenarioFinished) or event.status != Status.FAILURE:
        return []
    found = []
    for checks in event.recorder.checks.values():
        for check in checks:
            if check.status == Status.FAILURE and check.failure_info is not None:
                failure = check.failure_info.failure
                message = " ".join(failure.message.split())[:300]
                found.append(
                    f"{event.label}: {failure.title}: {message}\n"
                    f"    {check.failure_info.code_sample}"
                )
    return found


def test_openapi_fuzz(fuzzed: tuple[ServerThread, Known], caplog: pytest.LogCaptureFixture) -> None:
    server, known = fuzzed
    caplog.set_level(logging.WARNING)  # thousands of requests: only what went wrong
    GLOBAL_HOOK_DISPATCHER.register_hook_with_name(_short_polls, "before_call")
    failures: list[str] = []
    tested: set[str] = set()
    try:
        for event in from_schema(_schema(server, known)).execute():
            failures += _failures(event)
            finished = isinstance(event, engine_events.ScenarioFinished)
            if finished and event.label and event.status != Status.SKIP:
                tested.add(event.label)
    finally:
        GLOBAL_HOOK_DISPATCHER.unregister(_short_polls)
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(sorted(set(failures)))
    document = httpx.get(f"{server.url}/openapi.json").json()
    every = {f"{m.upper()} {path}" for path, item in document["paths"].items() for m in item}
    assert tested == every, f"not tested: {sorted(every - tested)}"
