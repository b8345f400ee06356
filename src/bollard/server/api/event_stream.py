"""/api/v1/events/stream: the event log as server-sent events, for the web console's live
views (and anything else that reads `text/event-stream`).

Each event is one SSE message: `id` is the event's id, `event` is `event`, `data` the same
JSON as an item of `GET /api/v1/events`. A client that reconnects passes the last id it saw
as `after` (or the `Last-Event-ID` header) and misses nothing. A comment line every
`KEEPALIVE` seconds keeps proxies from closing an idle stream; a stream ends after
`max_seconds` (the client reconnects), so no connection is held for ever; with 0 it sends
what is there and ends at once.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from bollard.domain.models import Event
from bollard.server.api.deps import ClockDep, EventsDep, WorkDep
from bollard.server.api.events import EventOut
from bollard.server.api.params import EventId
from bollard.server.clock import Clock, Deadline
from bollard.server.ports import EventFeed, UnitOfWork
from bollard.store import events

router = APIRouter(prefix="/events", tags=["events"])

KEEPALIVE = 15.0
BATCH = 200
MAX_SECONDS = 3600.0


def sse_message(event: EventOut) -> str:
    """One event as an SSE message (`data` is one line: JSON has no raw newlines)."""
    data = json.dumps(event.model_dump(mode="json"), separators=(",", ":"))
    return f"id: {event.id}\nevent: event\ndata: {data}\n\n"


async def _latest(work: UnitOfWork) -> int:
    def tx() -> int:
        with work.read() as conn:
            found = events.last(conn, 1)
            return found[-1].id if found else 0

    return await work.run(tx)


async def _stream(
    request: Request,
    work: UnitOfWork,
    clock: Clock,
    feed: EventFeed,
    start: int,
    max_seconds: float,
) -> AsyncIterator[str]:
    last = start
    deadline = Deadline.after(clock, max_seconds)
    # Tells the client how long to wait before it reconnects, and where it starts.
    yield f"retry: 2000\n: from {last}\n\n"
    while True:

        def read(after: int = last) -> list[Event]:
            with work.read() as conn:
                return events.after(conn, after, limit=BATCH)

        found = await work.run(read)
        for e in found:
            yield sse_message(EventOut.of(e))
            last = e.id
        if len(found) == BATCH:
            continue  # more are waiting: read on before sleeping
        if deadline.remaining() <= 0 or await request.is_disconnected():
            return
        quiet = Deadline.after(clock, min(KEEPALIVE, deadline.remaining()))
        while (remaining := quiet.remaining()) > 0:
            await feed.changed(remaining)
            if await _latest(work) > last:
                break
        else:
            yield ": keepalive\n\n"


@router.get(
    "/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "An event stream."}},
)
async def stream_events(
    request: Request,
    work: WorkDep,
    clock: ClockDep,
    feed: EventsDep,
    after: Annotated[
        EventId | None,
        Query(description="Start after this event id (default: from now on)."),
    ] = None,
    max_seconds: Annotated[
        float,
        Query(
            ge=0,
            le=MAX_SECONDS,
            description="End the stream after this many seconds (0: send the events written "
            "so far after `after`, then end).",
        ),
    ] = MAX_SECONDS,
    last_event_id: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> StreamingResponse:
    """Every event written after `after` (or from now on), live, as server-sent events."""
    start = after
    if start is None and last_event_id is not None and last_event_id.isdigit():
        start = int(last_event_id)
    if start is None:
        start = await _latest(work)
    return StreamingResponse(
        _stream(request, work, clock, feed, start, max_seconds),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
