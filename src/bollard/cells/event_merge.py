"""The event log through the API server: every cell's events and the API server's own,
merged in time order.

Event ids are each database's own, so a position in the merged log is one id per source
(`api` and every cell), carried as an opaque string wherever a plain server gives an event id
(`after`, `last_id`, the stream's `id:` and `Last-Event-ID`). Each event has `cell` (null for
the API server's own: cells, flavors, users)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx

from bollard.cells.directory import (
    CellClient,
    CellDirectory,
    CellUnreachable,
    identity_headers,
    refusal,
)
from bollard.cells.gather import decode, encode
from bollard.domain.errors import BollardError, InvalidInput
from bollard.domain.models import Event
from bollard.domain.policy import Identity
from bollard.server.api.events import EventOut
from bollard.server.clock import Clock, Deadline
from bollard.server.ports import EventFeed, UnitOfWork
from bollard.store import events

API = "api"  # the API server's own events, in a position
FILTERS = ("vm", "node", "task", "actor")
KEEPALIVE = 15.0
MAX_SECONDS = 3600.0


def event_json(e: Event, cell: str | None) -> dict[str, Any]:
    return {**EventOut.of(e).model_dump(mode="json"), "cell": cell}


def _position(given: str | None) -> dict[str, int] | None:
    if given is None or given == "":
        return None
    try:
        return {k: int(v or 0) for k, v in decode(given).items()}
    except ValueError:
        raise InvalidInput("after: not a position this API server gave") from None


def _encode(position: Mapping[str, int]) -> str:
    return encode({k: str(v) for k, v in position.items()})


class EventMerge:
    def __init__(
        self, *, work: UnitOfWork, clock: Clock, feed: EventFeed, directory: CellDirectory
    ) -> None:
        self._work = work
        self._clock = clock
        self._feed = feed
        self._cells = directory

    def _local(self, after: int | None, limit: int, params: Mapping[str, str]) -> list[Event]:
        vm, node, task, actor = (params.get(k) for k in FILTERS)
        with self._work.read() as conn:
            if after is None:
                return events.last(conn, limit, vm=vm, node=node, task_id=task, actor=actor)
            return events.after(
                conn, after, limit=limit, vm=vm, node=node, task_id=task, actor=actor
            )

    async def page(self, params: Mapping[str, str], identity: Identity | None) -> dict[str, Any]:
        """`GET /events` merged (see the module docstring); `before` is refused."""
        if params.get("before") is not None:
            raise InvalidInput("before: paging back is per cell through the API server (?cell=)")
        limit = int(params.get("limit") or 100)
        if not 1 <= limit <= 1000:
            raise InvalidInput("limit: must be between 1 and 1000")
        wait = float(params.get("wait") or 0)
        position = _position(params.get("after"))
        filters = {k: params[k] for k in FILTERS if params.get(k)}
        clients = self._cells.clients()
        found: list[tuple[str, str | None, int, dict[str, Any]]] = []
        unreachable: list[dict[str, str]] = []
        last: dict[str, int] = {}
        local = await self._work.run(
            self._local, None if position is None else position.get(API, 0), limit + 1, params
        )
        for e in local:
            found.append((e.at.isoformat(), None, e.id, event_json(e, None)))
        last[API] = max([e.id for e in local], default=(position or {}).get(API, 0))

        async def one(client: CellClient, waited: float) -> dict[str, Any]:
            query: dict[str, Any] = {**filters, "limit": limit}
            if position is not None:
                query["after"] = position.get(client.name, 0)
                query["wait"] = waited
            answer = await client.call(
                "GET",
                "/events",
                params=query,
                identity=identity,
                deadline=self._cells.deadline + waited,
            )
            if answer.status_code == 404:
                return {"items": [], "last_id": query.get("after", 0)}
            if answer.status_code >= 400:
                raise refusal(client.name, answer)
            result: dict[str, Any] = answer.json()
            return result

        waits = wait if position is not None and not local else 0.0
        pending = {asyncio.ensure_future(one(c, waits)): c for c in clients}
        answers: dict[str, dict[str, Any]] = {}
        while pending:
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for future in done:
                client = pending.pop(future)
                error = future.exception()
                if isinstance(error, CellUnreachable):
                    unreachable.append({"cell": client.name, "error": error.error})
                    self._cells.mark(client.name, error.error)
                elif error is not None:
                    for other in pending:
                        other.cancel()
                    raise error
                else:
                    answers[client.name] = future.result()
            if waits and any(a.get("items") for a in answers.values()):
                for other in pending:  # something arrived: answer now, the rest next time
                    other.cancel()
                    if pending[other].name not in answers:
                        last[pending[other].name] = (position or {}).get(pending[other].name, 0)
                break
        for name, answer in answers.items():
            items = answer.get("items", [])
            for item in items:
                item["cell"] = name
                found.append((str(item["at"]), name, int(item["id"]), item))
            last[name] = int(answer.get("last_id") or 0)
        for u in unreachable:
            last[u["cell"]] = (position or {}).get(u["cell"], 0)
        told_more = any(a.get("more") for a in answers.values())
        if position is None:
            found.sort(key=lambda t: (t[0], t[1] or "", t[2]))
            more = len(found) > limit or told_more
            taken = found[-limit:]
        else:
            found.sort(key=lambda t: (t[0], t[1] or "", t[2]))
            more = len(found) > limit or told_more
            taken = found[:limit]
            cut = found[limit:]
            for _, cell, _id, _ in cut:  # not given yet: resume before them
                source = cell or API
                given = [i for _, c, i, _ in taken if (c or API) == source]
                last[source] = max(given) if given else position.get(source, 0)
        return {
            "items": [item for *_, item in taken],
            "last_id": _encode(last),
            "more": more,
            "unreachable": unreachable,
        }

    async def stream(
        self, params: Mapping[str, str], last_event_id: str | None, identity: Identity | None
    ) -> AsyncIterator[str]:
        """`GET /events/stream` merged: every source's stream at once, each message with its
        `cell` and, as its id, the merged position after it."""
        given = params.get("after") or last_event_id
        position = _position(given)
        max_seconds = min(float(params.get("max_seconds") or MAX_SECONDS), MAX_SECONDS)
        if position is None:
            position = await self._now(identity)
        queue: asyncio.Queue[tuple[str, str | None, dict[str, Any] | None]] = asyncio.Queue()
        deadline = Deadline.after(self._clock, max_seconds)

        async def follow(client: CellClient) -> None:
            query = {"after": position.get(client.name, 0), "max_seconds": max_seconds}
            try:
                async with client.http.stream(
                    "GET", "/events/stream", params=query,
                    headers=identity_headers(identity),
                    timeout=httpx.Timeout(self._cells.deadline, read=None),
                ) as answer:  # fmt: skip
                    if answer.status_code != 200:
                        await queue.put((client.name, f"answered HTTP {answer.status_code}", None))
                        return
                    async for line in answer.aiter_lines():
                        if line.startswith("data: "):
                            await queue.put((client.name, None, json.loads(line[6:])))
            except (httpx.TransportError, httpx.TimeoutException) as exc:
                await queue.put(
                    (client.name, str(exc).splitlines()[0] if str(exc) else "lost", None)
                )

        async def local() -> None:
            after = position.get(API, 0)
            while deadline.remaining() > 0:
                found = await self._work.run(self._local, after, 200, {})
                for e in found:
                    await queue.put((API, None, event_json(e, None)))
                    after = e.id
                if len(found) < 200:
                    await self._feed.changed(min(KEEPALIVE, max(deadline.remaining(), 0.01)))

        followers = [asyncio.ensure_future(follow(c)) for c in self._cells.clients()]
        followers.append(asyncio.ensure_future(local()))
        try:
            yield f"retry: 2000\n: from {_encode(position)}\n\n"
            while (remaining := deadline.remaining()) > 0:
                try:
                    source, error, data = await asyncio.wait_for(
                        queue.get(), timeout=min(KEEPALIVE, remaining)
                    )
                except TimeoutError:
                    yield ": keepalive\n\n"
                    continue
                if data is None:
                    yield f": cell {source} did not answer: {error}\n\n"
                    continue
                position[source] = int(data["id"])
                data["cell"] = None if source == API else source
                body = json.dumps(data, separators=(",", ":"))
                yield f"id: {_encode(position)}\nevent: event\ndata: {body}\n\n"
        finally:
            for f in followers:
                f.cancel()

    async def _now(self, identity: Identity | None) -> dict[str, int]:
        """Every source's newest event id (a cell that does not answer: from its start)."""

        def newest() -> int:
            with self._work.read() as conn:
                found = events.last(conn, 1)
            return found[-1].id if found else 0

        position = {API: await self._work.run(newest)}

        async def one(client: CellClient) -> None:
            try:
                answer = await client.json("GET", "/events", params={"limit": 1}, identity=identity)
                position[client.name] = int(answer.get("last_id") or 0)
            except BollardError:
                position[client.name] = 0

        await asyncio.gather(*(one(c) for c in self._cells.clients()))
        return position
