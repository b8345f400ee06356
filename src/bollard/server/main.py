"""`bollard server`: run the management server in the foreground."""

from __future__ import annotations

import logging
import os
import ssl
import stat
from pathlib import Path
from typing import Any

import uvicorn

from bollard.domain.errors import BollardError
from bollard.domain.protocol import MAX_AGENT_MESSAGE
from bollard.server.assembly import prepare
from bollard.server.config import ServerConfig
from bollard.server.gc_tuning import GcPauses, tune
from bollard.store.db import redact_url

log = logging.getLogger(__name__)

# TLS 1.2's forward-secret AEAD suites (TLS 1.3 has only such suites).
TLS_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


def tls_options(config: ServerConfig) -> dict[str, Any]:
    """uvicorn's ssl options for ``config`` ({} for plain HTTP); the files are loaded once
    here so that a bad one is a one-line error before anything starts."""
    return tls_file_options(config.tls_cert, config.tls_key, config.tls_client_ca)


def tls_file_options(cert: Path | None, key: Path | None, client_ca: Path | None) -> dict[str, Any]:
    """`tls_options` for these files (also the API server's, bollard/cells/main.py)."""
    if cert is None or key is None:
        if cert is not None or key is not None or client_ca is not None:
            raise BollardError("TLS needs both a certificate and its key (--tls-cert, --tls-key)")
        return {}
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        raise BollardError(
            f"cannot use the TLS certificate {cert} with the key {key}: {exc.reason or exc}"
        ) from None
    except OSError as exc:
        raise BollardError(
            f"cannot read the TLS certificate {cert} or key {key}: {exc.strerror or exc}"
        ) from None
    if client_ca is not None:
        try:
            context.load_verify_locations(cafile=client_ca)
        except ssl.SSLError:
            raise BollardError(f"the client CA file {client_ca} holds no PEM certificate") from None
        except OSError as exc:
            raise BollardError(
                f"cannot read the client CA file {client_ca}: {exc.strerror or exc}"
            ) from None
    if key.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("the TLS key %s is readable by other users: chmod 600 it", key)
    return {
        "ssl_certfile": str(cert),
        "ssl_keyfile": str(key),
        "ssl_ca_certs": None if client_ca is None else str(client_ca),
        "ssl_cert_reqs": ssl.CERT_NONE if client_ca is None else ssl.CERT_REQUIRED,
        "ssl_ciphers": TLS_CIPHERS,
    }


def run_server(config: ServerConfig, log_level: str = "info") -> None:
    # Everything the server creates (database, WAL, logs, keys) is its own: 0600 and 0700.
    os.umask(0o077)
    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    tls = tls_options(config)
    scheme = "https" if tls else "http"
    log.info(
        "starting on %s://%s:%d, database %s",
        scheme,
        config.host,
        config.port,
        redact_url(config.db_url),
    )
    if not tls:
        log.warning(
            "serving plain HTTP: API and agent traffic, tokens included, is unencrypted"
            " (use --tls-cert and --tls-key)"
        )
    elif config.tls_client_ca is not None:
        log.info("clients must present a certificate from %s", config.tls_client_ca)
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
            # A bigger agent frame is refused from its header, before it is read.
            ws_max_size=MAX_AGENT_MESSAGE,
            timeout_graceful_shutdown=5,
            lifespan="on",
            **tls,
        )
    )
    server.run()
