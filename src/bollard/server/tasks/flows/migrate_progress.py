"""What a migration shows while it runs, and how it says, once it has ended, how the VM moved.

While the source host transfers the VM, its agent sends `progress` messages (a fraction and
a message such as ``migrate transfer: 42%``; on each tenth, on a change of phase and at least
every second). The dispatcher keeps the latest one of each command awaited now; here it is
copied into the task's result, so that ``GET /tasks/{id}`` (and `bollard vm migrate --wait`)
shows the phase and the percentage::

    "progress": {"step": "live_migrate", "fraction": 0.42, "message": "migrate transfer: 42%"}

It is written when the phase changes, when the fraction has grown by a twentieth, and at
least once a second while it moves at all (looked at every PROGRESS_POLL seconds), and
removed when the task ends. A migration that succeeded then has a one-line ``summary`` in its result
(``migrated live to node2``, or ``migrated by shutdown to node2 (live migration failed:
...); the VM was down for 12 s``), and after a fallback a ``fallback`` record (the live
migration's error, the downtime); a shutdown migration of a running VM also records that
summary as a ``migration.downtime`` event.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from datetime import datetime
from typing import TypeVar

from sqlalchemy import Connection

from bollard.domain.models import Task
from bollard.server.tasks.context import StepContext
from bollard.server.tasks.params import MigrateParams
from bollard.store import tasks

log = logging.getLogger(__name__)

T = TypeVar("T")
Ctx = StepContext[MigrateParams]

PROGRESS_POLL = 0.5  # seconds between two looks at the latest progress of the transfer
PROGRESS_EVERY = 0.5  # a fraction that moved is written again after this long at most
STEPS = 20  # the fraction is written again once it has grown by 1/STEPS
PROGRESS = "progress"


async def with_progress(ctx: Ctx, key: str, run: Awaitable[T]) -> T:
    """Await ``run`` (the step's command ``key``), copying its progress into the task's
    result meanwhile. The copy is best effort: its failure never fails the migration."""
    stop = asyncio.Event()
    watcher = asyncio.create_task(_copy_progress(ctx, key, stop))
    try:
        return await run
    finally:
        stop.set()  # the watcher ends its write, if one is under way, then stops
        await asyncio.wait({watcher})
        if not watcher.cancelled() and watcher.exception() is not None:
            log.warning(
                "task %s: the progress of its %s step was not recorded: %s",
                ctx.task.id,
                ctx.step_name,
                watcher.exception(),
            )


async def _copy_progress(ctx: Ctx, key: str, stop: asyncio.Event) -> None:
    cid: str | None = None
    shown: tuple[str, int] | None = None  # (phase, twentieths) last written
    last: tuple[float, float] | None = None  # (fraction, when) last written
    while not await ctx.clock.wait_event(stop, PROGRESS_POLL):
        if cid is None:  # written with the step just before the command is sent
            cid = (await ctx.sent_commands()).get(key)
            if cid is None:
                continue
        progress = ctx.command_progress(cid)
        if progress is None:
            continue
        # "migrate transfer: 42%": the phase is what comes before the percentage.
        seen = (progress.message.rpartition(":")[0], int(progress.fraction * STEPS))
        now = ctx.clock.monotonic()
        moved = (
            last is not None and progress.fraction != last[0] and now - last[1] >= PROGRESS_EVERY
        )
        if seen == shown and not moved:
            continue
        view = {
            "step": ctx.step_name,
            "fraction": round(progress.fraction, 3),
            "message": progress.message,
        }
        await ctx.merge_result({PROGRESS: view})
        shown, last = seen, (progress.fraction, now)


# -- at the end -----------------------------------------------------------------------------


def finish_result(conn: Connection, ctx: Ctx, *, succeeded: bool) -> None:
    """The task's result once it has ended (in the transaction that ends it): no progress
    any more; if it succeeded, how the VM moved (``summary``, ``fallback``)."""
    task = tasks.get(conn, ctx.task.id, with_steps=True)
    result = {k: v for k, v in task.result.items() if k != PROGRESS}
    if succeeded:
        summary, fallback, downtime = _how_it_moved(task, ctx)
        result["summary"] = summary
        if fallback is not None:
            result["fallback"] = {"live_error": fallback, "downtime_s": downtime}
        if downtime is not None:
            ctx.event(
                conn, "migration.downtime", summary,
                node=ctx.params.target, downtime_s=downtime, fallback=fallback is not None,
            )  # fmt: skip
    if result != task.result:
        tasks.set_result(conn, ctx.task.id, result)


def _how_it_moved(task: Task, ctx: Ctx) -> tuple[str, str | None, float | None]:
    """(summary, the live migration's error if it fell back, the downtime in seconds if the
    VM was shut down to move)."""
    p = ctx.params
    live = ctx.results.get("live_migrate") or {}
    if not p.was_running:
        return f"moved to {p.target} while stopped", None, None
    if live.get("moved"):
        found = live.get("recovered_from")
        after = f" (found there after: {found})" if found else ""
        return f"migrated live to {p.target}{after}", None, None
    downtime = _downtime(task)
    down = f"; the VM was down for {_seconds(downtime)}" if downtime is not None else ""
    fallback = str(live.get("live_error") or "") if live.get("fallback") else None
    why = f" (live migration failed: {fallback})" if fallback is not None else ""
    return f"migrated by shutdown to {p.target}{why}{down}", fallback, downtime


def _downtime(task: Task) -> float | None:
    """From the shutdown on the source to the start on the target (None if unknown)."""
    times: dict[str, tuple[datetime | None, datetime | None]] = {
        s.name: (s.started_at, s.finished_at) for s in task.steps
    }
    began = times.get("stop", (None, None))[0]
    ended = times.get("start", (None, None))[1]
    if began is None or ended is None:
        return None
    return round(max(0.0, (ended - began).total_seconds()), 1)


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if value >= 10 else f"{value:.1f} s"
