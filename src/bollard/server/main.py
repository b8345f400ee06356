"""`bollard server`: run the management server in the foreground."""

from __future__ import annotations

import logging

import uvicorn

from bollard.server.assembly import prepare
from bollard.server.config import ServerConfig
from bollard.server.gc_tuning import GcPauses, tune
from bollard.store.db import redact_url


def run_server(config: ServerConfig, log_level: str = "info") -> None:
    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger(__name__).info(
        "starting on %s:%d, database %s", config.host, config.port, redact_url(config.db_url)
    )
    assembly = prepare(config)
    app = assembly.app()
    pauses = GcPauses(assembly.clock)
    pauses.install()
    assembly.metrics.registry.register(pauses)
    tune()  # the collector's settings for a large heap (gc_tuning.py)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=config.host,
            port=config.port,
            log_level=log_level,
            access_log=False,
            ws="websockets-sansio",
            timeout_graceful_shutdown=5,
            lifespan="on",
        )
    )
    server.run()
