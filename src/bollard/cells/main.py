"""`bollard api`: run the API server in front of cells, in the foreground."""

from __future__ import annotations

import logging
import os

import uvicorn

from bollard.cells.assembly import prepare_api
from bollard.cells.config import ApiConfig
from bollard.server.main import tls_file_options
from bollard.store.db import redact_url

log = logging.getLogger(__name__)


def run_api(config: ApiConfig, log_level: str = "info") -> None:
    """Serve until interrupted (SIGINT/SIGTERM); a bad option or file is a BollardError."""
    os.umask(0o077)
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    tls = tls_file_options(config.tls_cert, config.tls_key, config.tls_client_ca)
    scheme = "https" if tls else "http"
    log.info(
        "API server (cells) starting on %s://%s:%d, API database %s",
        scheme, config.host, config.port, redact_url(config.db_url),
    )  # fmt: skip
    if not tls:
        log.warning("serving plain HTTP: API traffic, tokens included, is unencrypted")
    assembly = prepare_api(config)
    server = uvicorn.Server(
        uvicorn.Config(
            assembly.app(),
            host=config.host,
            port=config.port,
            log_level=log_level,
            access_log=False,
            timeout_graceful_shutdown=5,
            lifespan="on",
            **tls,
        )
    )
    server.run()
