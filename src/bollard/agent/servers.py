"""The servers an agent dials, in turn, and how long it waits between two attempts.

The addresses are the configured ones (``--server``, in their order), then those the last
welcome named that are not among them; each welcome's list replaces the previous one. A
failed dial or a lost session moves the agent on to the next address (round robin). Within a
round the agent waits only the first, short backoff (with jitter, so that a fleet leaving a
dead server does not reach the next one all at once); after a full round of failures it
waits the backoff delay, which then doubles up to its maximum. A session that lasted long
enough starts the backoff over. With one address every attempt is a round: the agent backs
off as it always did.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from bollard.agent.config import AgentConfigError, is_tls, ws_url

log = logging.getLogger(__name__)


class ServerRotation:
    """The address to dial now (``current``) and the backoff. The configured addresses must
    be valid (``config.validate``); duplicates are dialled once."""

    def __init__(self, configured: Sequence[str], *, initial: float, maximum: float) -> None:
        self.configured = _unique(configured, ())
        if not self.configured:
            raise ValueError("an agent needs at least one server address")
        self.learned: tuple[str, ...] = ()
        self.initial = initial
        self.maximum = maximum
        self.delay = initial  # the wait after the current round, if it fails whole
        self.current = self.configured[0]
        self._tls = is_tls(self.current)
        self._failures = 0  # attempts failed in the current round

    @property
    def urls(self) -> tuple[str, ...]:
        return self.configured + self.learned

    def position(self) -> tuple[int, int]:
        """``current``'s place in the list (from 1) and the number of addresses; 0 for one no
        longer listed (a learned address a later welcome left out)."""
        urls = self.urls
        return (urls.index(self.current) + 1 if self.current in urls else 0), len(urls)

    def learn(self, servers: Sequence[str]) -> None:
        """Take the servers a welcome named in place of those named before. An address that
        is not a server URL, or not of the configured kind (http or https: the TLS settings
        are the configured ones) is logged and left out."""
        usable: list[str] = []
        refused: list[str] = []
        for url in servers:
            try:
                ws_url(url)
            except AgentConfigError:
                refused.append(f"{url!r} is not a server URL")
                continue
            if is_tls(url) != self._tls:
                refused.append(f"{url} is not {'https' if self._tls else 'http'}")
                continue
            usable.append(url)
        if refused:
            log.warning("ignoring server addresses from the welcome: %s", "; ".join(refused))
        learned = _unique(usable, self.configured)
        if learned != self.learned:
            self.learned = learned
            log.info(
                "the server names %d other server(s) to dial after the configured ones%s",
                len(learned),
                ": " + ", ".join(learned) if learned else "",
            )

    def restart(self) -> None:
        """Start the backoff over (e.g. once a partition healed)."""
        self.delay = self.initial
        self._failures = 0

    def slow(self) -> None:
        """Wait the longest backoff after this round (a server refused the agent's version)."""
        self.delay = self.maximum

    def failed(self, *, stable: bool = False) -> float:
        """The attempt on ``current`` ended (a failed dial or a lost session): moves on to
        the next address and returns the longest wait before dialling it (the caller draws
        the jitter, between half of it and it). ``stable``: the session lasted long enough
        to start the backoff over."""
        if stable:
            self.restart()
        self._failures += 1
        wait = self.initial
        if self._failures >= len(self.urls):  # a full round failed
            wait = self.delay
            self.delay = min(self.delay * 2, self.maximum)
            self._failures = 0
        urls = self.urls
        index = urls.index(self.current) if self.current in urls else -1
        self.current = urls[(index + 1) % len(urls)]
        return wait


def _unique(urls: Sequence[str], known: Sequence[str]) -> tuple[str, ...]:
    """``urls`` in order without those that dial the same WebSocket URL as an earlier one
    or as one of ``known``."""
    seen = {ws_url(url) for url in known}
    kept: list[str] = []
    for url in urls:
        key = ws_url(url)
        if key not in seen:
            seen.add(key)
            kept.append(url)
    return tuple(kept)
