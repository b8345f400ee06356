"""`bollard db status|upgrade`: the database schema, and its expand and contract steps during
a rolling upgrade (store/migrate.py). Local commands: they open the database themselves."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from bollard.cli.output import OUTPUT_OPTION, Output, fail, print_fields, print_json, print_table
from bollard.cli.server_cmd import DEFAULT_DATA_DIR, DataDirOption, DbOption, db_url_of, first_line
from bollard.domain.errors import BollardError

db_app = typer.Typer(
    help="The database schema: its revision and its migrations (Alembic), applied in expand "
    "and contract steps so that servers of two consecutive releases can share the database "
    "during a rolling upgrade.",
    no_args_is_help=True,
)


def _open(db: str | None, data_dir: Path, *, create: bool) -> Any:
    from bollard.store.db import Database

    url = db_url_of(db, data_dir)
    if url.startswith("sqlite") and create:
        data_dir.mkdir(parents=True, exist_ok=True)
    return Database(url)


def _steps(revisions: list[str]) -> str:
    return ", ".join(revisions) if revisions else "none"


@db_app.command("upgrade")
def db_upgrade(
    db: DbOption = None,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    contract: Annotated[
        bool | None,
        typer.Option(
            "--contract/--no-contract",
            help="--contract: apply the contract steps too, refused while servers of an older "
            "schema still run (they are named); --no-contract: only the expand steps. "
            "Default: the contract steps when no such server runs (as a server does at start).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Create the schema, or apply the migrations it lacks: first the expand steps (they only
    add, so the previous release's servers keep running), then the contract steps (they
    remove what only the previous release used)."""
    from sqlalchemy.exc import SQLAlchemyError

    from bollard.store import migrate
    from bollard.store.db import redact_url

    database = _open(db, data_dir, create=True)
    try:
        state = migrate.upgrade(database, contract=contract)
    except BollardError as exc:
        fail(exc.message)
    except SQLAlchemyError as exc:
        fail(f"cannot upgrade {redact_url(database.url)}: {first_line(exc)}")
    finally:
        database.dispose()
    print_fields([
        ("database", redact_url(database.url)),
        ("revision", state.revision),
        ("held back", _steps(state.contract) if state.contract else None),
    ])  # fmt: skip


@db_app.command("status")
def db_status(
    db: DbOption = None, data_dir: DataDirOption = DEFAULT_DATA_DIR, output: Output = OUTPUT_OPTION
) -> None:
    """The schema's revision, the steps this Bollard would apply (expand, then contract), the
    oldest schema whose servers may run on it, and the servers sharing it with their schema."""
    from sqlalchemy.exc import SQLAlchemyError

    from bollard.store import migrate
    from bollard.store.db import redact_url

    database = _open(db, data_dir, create=False)
    try:
        state = migrate.schema_state(database)
        live = migrate.live_servers(database)
    except SQLAlchemyError as exc:
        fail(f"cannot read {redact_url(database.url)}: {first_line(exc)}")
    finally:
        database.dispose()
    data = {
        "database": redact_url(database.url),
        "revision": state.revision,
        "head": state.head,
        "known": state.known,
        "oldest_server": state.oldest_server,
        "expand": state.expand,
        "contract": state.contract,
        "servers": [
            {"name": r.name, "version": r.version, "schema": r.schema_revision, "url": r.url}
            for r in live
        ],
    }
    if output is Output.json:
        print_json(data)
        return
    shown = state.revision or "none (empty database)"
    print_fields([
        ("database", data["database"]),
        ("revision", shown if state.known else f"{shown} (newer than this Bollard's)"),
        ("this Bollard", state.head),
        ("to expand", _steps(state.expand)),
        ("to contract", _steps(state.contract)),
        ("oldest server", state.oldest_server),
    ])  # fmt: skip
    if live:
        print_table(
            "live servers",
            ["NAME", "VERSION", "SCHEMA", "URL"],
            [[r.name, r.version, r.schema_revision, r.url] for r in live],
        )


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")
