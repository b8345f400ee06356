"""Schema management, only through Alembic migrations, in expand and contract steps so that
servers of two consecutive releases can share one database during a rolling upgrade.

Every migration script says which kind of step it is, with a module-level ``phase``:

- ``"expand"`` (the default, and every script written before the rule): it only adds
  (tables, nullable or defaulted columns, indexes), so the previous release's servers still
  run on the schema it leaves;
- ``"contract"``: it removes or tightens what the previous release still uses; the script
  names, in ``oldest_server``, the oldest schema head whose servers still run after it (the
  release that stopped using what it removes).

The database remembers, in the setting ``schema.oldest_server``, the oldest schema head whose
servers may run on it. A server whose scripts do not know the database's revision (a newer
release migrated it) runs on it when it knows that revision (it is its own head or older);
otherwise it refuses to start, saying which release it needs.

A server applies the expand steps when it starts. The contract steps are applied when nobody
is left who needs what they remove: at the start of a server when no live server of an older
schema head shares the database (always, on SQLite, where a server is alone), or by
``bollard db upgrade --contract``, which refuses while such servers live and names them. The
check and the contract are one transaction holding a lock on ``servers``; a server checks the
schema again once it has joined, so one that joined while a contract ran leaves at once.
Two servers starting together migrate one after the other (an advisory lock on PostgreSQL).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import Script, ScriptDirectory
from sqlalchemy import Connection, text

from bollard.domain.errors import SchemaContractRefused, SchemaTooNew
from bollard.domain.servers import ServerRecord
from bollard.store import servers, settings
from bollard.store.db import Database

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
OLDEST_SERVER_KEY = "schema.oldest_server"
FIRST_ROLLING = "0017"  # the first schema whose servers run on a newer, expanded one
# pg_advisory_xact_lock key of schema changes (any constant: only migrations take it).
_MIGRATION_LOCK = 0x626F6C6C  # "boll"

Phase = Literal["expand", "contract"]
Contract = bool | None  # True: apply them, False: hold them back, None: when safe


@dataclass(frozen=True)
class Chain:
    """The revisions of a scripts directory, oldest first."""

    scripts: list[Script]

    @classmethod
    def load(cls, directory: Path = MIGRATIONS_DIR) -> Chain:
        found = ScriptDirectory(str(directory))
        return cls(list(reversed(list(found.walk_revisions()))))

    @property
    def head(self) -> str:
        return self.scripts[-1].revision

    @property
    def order(self) -> dict[str, int]:
        return {s.revision: k for k, s in enumerate(self.scripts)}

    def after(self, revision: str | None) -> list[Script]:
        """The scripts to apply to a database at ``revision`` (None: an empty one)."""
        if revision is None:
            return list(self.scripts)
        return self.scripts[self.order[revision] + 1 :]

    def oldest_server(self, revision: str) -> str:
        """The oldest schema head whose servers run on a database at ``revision``: what the
        newest contract step up to it says, else the first revision."""
        for script in reversed(self.scripts[: self.order[revision] + 1]):
            if phase_of(script) == "contract":
                return str(script.module.oldest_server)
        # (no server older than the first schema of rolling upgrades reads the setting)
        return FIRST_ROLLING if FIRST_ROLLING in self.order else self.scripts[0].revision


def phase_of(script: Script) -> Phase:
    phase = getattr(script.module, "phase", "expand")
    if phase not in ("expand", "contract"):
        raise ValueError(f"migration {script.revision}: phase {phase!r} is not expand/contract")
    if phase == "contract" and not isinstance(getattr(script.module, "oldest_server", None), str):
        raise ValueError(f"migration {script.revision}: a contract step names oldest_server")
    return "contract" if phase == "contract" else "expand"


@dataclass(frozen=True)
class SchemaState:
    """A database's schema as this Bollard sees it (`bollard db status`)."""

    revision: str | None  # the database's
    head: str  # this Bollard's newest
    known: bool  # whether this Bollard's scripts know `revision`
    oldest_server: str | None  # the setting: the oldest schema head that may run on it
    expand: list[str] = field(default_factory=list)  # steps not applied yet, in order
    contract: list[str] = field(default_factory=list)


def _config(db: Database, directory: Path = MIGRATIONS_DIR) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(directory))
    cfg.set_main_option("sqlalchemy.url", db.url.replace("%", "%%"))
    return cfg


def head_revision(directory: Path = MIGRATIONS_DIR) -> str:
    return Chain.load(directory).head


def _revision_of(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def current_revision(db: Database) -> str | None:
    with db.engine.connect() as conn:
        return _revision_of(conn)


def _oldest_server_setting(conn: Connection) -> str | None:
    if not conn.dialect.has_table(conn, "settings"):
        return None
    return settings.get(conn, OLDEST_SERVER_KEY)


def _state(conn: Connection, chain: Chain) -> SchemaState:
    revision = _revision_of(conn)
    known = revision is None or revision in chain.order
    pending = chain.after(revision) if known else []
    expand: list[str] = []
    contract: list[str] = []
    for script in pending:  # the expand steps before the first contract one go first
        (contract if contract or phase_of(script) == "contract" else expand).append(script.revision)
    return SchemaState(revision, chain.head, known, _oldest_server_setting(conn), expand, contract)


def schema_state(db: Database, directory: Path = MIGRATIONS_DIR) -> SchemaState:
    with db.engine.connect() as conn:
        return _state(conn, Chain.load(directory))


def live_servers(db: Database) -> list[ServerRecord]:
    """The live servers on the database (none before it had a `servers` table)."""
    with db.engine.connect() as conn:
        if not conn.dialect.has_table(conn, "servers"):
            return []
        return servers.live(conn, servers.db_now(conn))


def _check(state: SchemaState, chain: Chain) -> None:
    if state.known:
        return
    needs = state.oldest_server
    if needs is not None and needs in chain.order:
        return  # a newer release's expand steps: this one runs on them
    reason = (
        f"a newer Bollard contracted it for servers of schema {needs} or newer; upgrade this "
        "server to the release the others run"
        if needs is not None
        else "upgrade Bollard or use another database"
    )
    raise SchemaTooNew(
        f"the database schema is at revision {state.revision}, which this Bollard does not "
        f"know (newest known: {chain.head}): {reason}"
    )


def check_compatible(db: Database, directory: Path = MIGRATIONS_DIR) -> SchemaState:
    """Refuse (SchemaTooNew) a schema this Bollard cannot run on: a revision its scripts do not
    know, unless the database says servers of a schema this Bollard knows may run on it."""
    chain = Chain.load(directory)
    with db.engine.connect() as conn:
        state = _state(conn, chain)
    _check(state, chain)
    return state


def check_not_newer(db: Database) -> None:
    check_compatible(db)


def _older_servers(conn: Connection, chain: Chain, oldest: str) -> list[str]:
    """The live servers whose schema head is older than ``oldest`` (a revision unknown here
    is a newer one's)."""
    if not conn.dialect.has_table(conn, "servers"):
        return []
    if conn.dialect.name == "postgresql":
        # Taken until the contract commits: a server joining now waits, then finds it done.
        conn.execute(text("LOCK TABLE servers IN SHARE ROW EXCLUSIVE MODE"))
    order, floor = chain.order, chain.order[oldest]
    older = []
    for row in servers.live(conn, servers.db_now(conn)):
        revision = row.schema_revision
        if revision in order and order[revision] < floor:
            older.append(f"{row.name} (schema {revision})")
    return older


def _upgrade_to(conn: Connection, cfg: Config, target: str) -> None:
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, target)


def upgrade(
    db: Database, *, contract: Contract = None, directory: Path = MIGRATIONS_DIR
) -> SchemaState:
    """Bring the schema up to date: the expand steps, then the contract steps as ``contract``
    says (None: when no live server of an older schema needs what they remove; True: the
    same, refused with SchemaContractRefused otherwise; False: held back). Refuses a schema
    this Bollard cannot run on. Returns the state after. A schema already there is left as
    it is without running Alembic's environment (every server start)."""
    chain = Chain.load(directory)
    state = check_compatible(db, directory)
    if not state.known or not (state.expand or state.contract):
        if contract and not state.known:
            raise SchemaContractRefused(
                f"the database schema is at revision {state.revision}, newer than this "
                f"Bollard's {chain.head}: run the contract with the newer release"
            )
        return state
    cfg = _config(db, directory)
    with db.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
        state = _state(conn, chain)  # again, under the lock: another server may have done it
        _check(state, chain)
        fresh = state.revision is None
        if state.expand:
            _upgrade_to(conn, cfg, state.expand[-1])
        if state.contract and contract is not False:
            needs = chain.oldest_server(state.contract[-1])
            older = [] if fresh else _older_servers(conn, chain, needs)
            if not older:
                _upgrade_to(conn, cfg, state.contract[-1])
            elif contract:
                raise SchemaContractRefused(
                    f"the schema's contract steps ({', '.join(state.contract)}) remove what "
                    f"servers older than schema {needs} use, and these still run: "
                    f"{', '.join(older)}; upgrade them first"
                )
            else:
                log.warning(
                    "schema contract steps %s held back: servers %s run an older schema "
                    "(they are applied when the last of them is upgraded, or by "
                    "`bollard db upgrade --contract`)",
                    ", ".join(state.contract),
                    ", ".join(older),
                )
        revision = _revision_of(conn)
        assert revision is not None
        settings.put(conn, OLDEST_SERVER_KEY, chain.oldest_server(revision), datetime.now(UTC))
        after = _state(conn, chain)
    if after.revision != state.revision:
        log.info("schema upgraded from %s to %s", state.revision or "nothing", after.revision)
    return after
