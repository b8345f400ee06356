"""Agent logging: stderr, the node name on every line, bearer tokens never printed."""

from __future__ import annotations

import logging
import re
import sys
from contextvars import ContextVar

# The node an agent task works for; asyncio tasks and to_thread calls inherit it.
node_var: ContextVar[str] = ContextVar("bollard_agent_node", default="-")

_SECRET_RE = re.compile(r"(?i)(bearer\s+)\S+")
_FORMAT = "%(asctime)s %(levelname)-7s [%(node)s] %(name)s: %(message)s"


class NodeFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.node = node_var.get()
        return True


class RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def redact(text: str) -> str:
    return _SECRET_RE.sub(r"\1***", text)


def configure_logging(level: str | int = "INFO") -> None:
    """Log to stderr at ``level``; calling it again only changes the level."""
    if isinstance(level, str):
        numeric = logging.getLevelName(level.upper())
        if not isinstance(numeric, int):
            raise ValueError(f"unknown log level {level!r}")
        level = numeric
    root = logging.getLogger()
    if not any(getattr(h, "_bollard_agent", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.addFilter(NodeFilter())
        handler.setFormatter(RedactingFormatter(_FORMAT))
        handler._bollard_agent = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
    # websockets logs every handshake header at DEBUG, including Authorization.
    logging.getLogger("websockets").setLevel(max(level, logging.INFO))
