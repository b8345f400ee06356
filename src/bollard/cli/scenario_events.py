"""Following the server's events while a scenario runs (GET /events with ``after`` and
``wait``), through server restarts: each new event goes to the timeline (unless it is the
task engine's bookkeeping), to the recovery-before-fence check, and to the list the
expectations read."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from bollard.cli.client import Client, CliError
from bollard.cli.scenario_timeline import Timeline, shown_event

__all__ = ["EventTail"]

log = logging.getLogger(__name__)

POLL_WAIT = 0.5  # seconds the server holds a request open waiting for new events
RETRY = 0.2  # seconds between attempts while the server does not answer


def _wall(at: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(at)).timestamp()
    except ValueError:
        return None


def event_text(event: dict[str, Any]) -> str:
    about = " ".join(str(event[k]) for k in ("node", "vm") if event.get(k))
    about = f" [{about}]" if about else ""
    return f"{event.get('kind')}{about}: {event.get('message')}"


class EventTail:
    def __init__(
        self,
        client: Client,
        timeline: Timeline,
        after: int,
        on_event: Callable[[dict[str, Any]], None],
    ) -> None:
        self.client = client
        self.timeline = timeline
        self.last_id = after
        self.on_event = on_event
        self.events: list[dict[str, Any]] = []
        self.unreachable = 0  # polls the server did not answer
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="event-tail", daemon=True)

    def start(self) -> EventTail:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=POLL_WAIT + 35)
        try:  # what came in since the last poll
            self.poll(0)
        except CliError as exc:
            log.warning("last read of the events failed: %s", exc)

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.events)

    def poll(self, wait: float) -> int:
        """Read the events after the last one seen (waiting up to ``wait`` s for one);
        how many came. CliError if the server does not answer."""
        page = self.client.get(
            "/events",
            params={"after": self.last_id, "limit": 1000, "wait": wait},
            timeout=wait + 30,
        )
        items: list[dict[str, Any]] = page.get("items") or []
        for event in items:
            self.last_id = max(self.last_id, int(event.get("id") or 0))
            with self._lock:
                self.events.append(event)
            if shown_event(str(event.get("kind") or "")):
                self.timeline.add("event", event_text(event), at_wall=_wall(event.get("at")))
            self.on_event(event)
        return len(items)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll(POLL_WAIT)
            except CliError as exc:  # the server restarts, or is too busy to answer
                self.unreachable += 1
                log.info("events: %s", exc)
                self._stop.wait(RETRY)
