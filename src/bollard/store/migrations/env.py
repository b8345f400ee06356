"""Alembic environment: runs on the connection Bollard hands it (see store/migrate.py)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from bollard.store.tables import metadata

config = context.config
connection = config.attributes.get("connection")

if connection is not None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
else:  # `alembic` command line, for developers writing migrations
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.begin() as conn:
        context.configure(connection=conn, target_metadata=metadata)
        with context.begin_transaction():
            context.run_migrations()
