"""The server's Prometheus metrics (``GET /metrics``, admin token): one registry per server.

- ``bollard_heartbeat_seconds``: from a heartbeat's arrival to its report stored (parse,
  queueing for the database, the transaction), by outcome;
- ``bollard_reconcile_pass_seconds``: one state-reconciliation pass (read facts, classify);
- ``bollard_agents_connected``: agent sessions open now.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Fine at the low end: a no-change heartbeat takes about a millisecond.
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
)  # fmt: skip
CONTENT_TYPE = CONTENT_TYPE_LATEST


class ServerMetrics:
    def __init__(self, connected: Callable[[], int]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.heartbeat_seconds = Histogram(
            "bollard_heartbeat_seconds",
            "Heartbeat processing, from arrival to the report stored.",
            ["outcome"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.reconcile_pass_seconds = Histogram(
            "bollard_reconcile_pass_seconds",
            "One state-reconciliation pass over every VM and host.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        agents = Gauge(
            "bollard_agents_connected", "Agent sessions open now.", registry=self.registry
        )
        agents.set_function(lambda: float(connected()))

    def render(self) -> bytes:
        return generate_latest(self.registry)
