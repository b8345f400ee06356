"""`bollard sim volume`: the volumes of sim pools as the fabric has them, and writing into
one behind Bollard's back (as a guest writing to its disk would).

A volume is named by its pool and file, with ``--node`` for a pool local to that host
(without it: the shared pool of that name). A sim volume holds no bytes: its checksum stands
for its content (see bollard.sim.storage), so a write changes the checksum, and copies,
snapshots and migrations can be seen to carry it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from bollard.cli.output import (
    OUTPUT_OPTION,
    Output,
    console,
    fail,
    print_fields,
    print_json,
    print_table,
)
from bollard.cli.sim_common import (
    DATA_DIR_OPTION,
    FABRIC_OPTION,
    existing_host,
    resolve_fabric_dir,
)

if TYPE_CHECKING:
    from bollard.sim.storage import PoolKey, SimStorage
    from bollard.sim.storage_models import SimVolume

volume_app = typer.Typer(
    help="The volumes of sim pools as the fabric has them; write into one behind Bollard's back.",
    no_args_is_help=True,
)

POOL_ARGUMENT = typer.Argument(..., help="Pool name.")
FILE_ARGUMENT = typer.Argument(..., help="The volume's file in the pool.")
NODE_OPTION = typer.Option(
    None, "--node", metavar="NODE", help="The host whose local pool it is (default: shared)."
)
MIB = 1024 * 1024


@volume_app.callback()
def _volume() -> None:
    """The volumes of sim pools as the fabric has them; write into one behind Bollard's
    back (as a guest writing to its disk would)."""


def _storage(fabric_dir: Path | None, data_dir: Path | None, node: str | None) -> SimStorage:
    from bollard.sim.fabric import Fabric
    from bollard.sim.storage import SimStorage

    path = resolve_fabric_dir(fabric_dir, data_dir, node=node)
    if node is not None:
        existing_host(path, node)
    return SimStorage(Fabric(path))


def _pool(name: str, node: str | None) -> PoolKey:
    from bollard.sim.storage import PoolKey

    try:
        return PoolKey(name, "shared" if node is None else "local")
    except ValueError as exc:
        fail(str(exc))


def volume_json(node: str | None, pool: PoolKey, rec: SimVolume) -> dict[str, Any]:
    from bollard.sim.storage import volume_path

    snapshots = sorted(rec.snapshots.items(), key=lambda kv: (kv[1].created_at, kv[0]))
    return {
        "node": node,
        "pool": pool.name,
        "type": pool.type,
        "file": rec.file,
        "format": rec.format,
        "size_mb": rec.size_mb,
        "allocated_mb": rec.allocated_mb,
        "checksum": rec.checksum,
        "snapshots": [
            {"name": name, "checksum": s.checksum, "size_mb": s.size_mb, "created_at": s.created_at}
            for name, s in snapshots
        ],
        "partial": rec.partial.command_id if rec.partial is not None else None,
        "path": volume_path(pool, rec.file),
        "created_at": rec.created_at,
        "updated_at": rec.updated_at,
    }


def _find(storage: SimStorage, pool: PoolKey, file: str, node: str | None) -> SimVolume:
    try:
        rec = storage.get(node or "", pool, file, time.time())
    except (ValueError, OSError) as exc:
        fail(f"cannot read volume {file}: {exc}")
    if rec is None:
        where = "" if node is None else f" on {node}"
        fail(f"no volume {file} in {pool}{where}")
    return rec


@volume_app.command("list")
def volume_list(
    node: str | None = typer.Option(
        None, "--node", metavar="NODE", help="Only the local pools of this host."
    ),
    shared: bool = typer.Option(False, "--shared", help="Only the shared pools."),
    pool: str | None = typer.Option(None, "--pool", metavar="POOL", help="Only this pool."),
    fabric_dir: Path | None = FABRIC_OPTION,
    data_dir: Path | None = DATA_DIR_OPTION,
    output: Output = OUTPUT_OPTION,
) -> None:
    """List the volumes of sim pools with their checksums: every host's local pools and
    the shared pools (or those of --node, or --shared only).

    With -o json: a list of {"node" (null for a shared pool), "pool", "type", "file",
    "format", "size_mb", "allocated_mb", "checksum", "snapshots": [{"name", "checksum",
    "size_mb", "created_at"}], "partial" (the copy job filling it, or null), "path",
    "created_at", "updated_at"}.
    """
    if node is not None and shared:
        fail("give --node or --shared, not both")
    storage = _storage(fabric_dir, data_dir, node)
    places: list[str | None] = []
    if not shared:
        places += [node] if node is not None else storage.fabric.nodes()
    if node is None:
        places.append(None)
    rows: list[dict[str, Any]] = []
    now = time.time()
    try:
        for place in places:
            for key in storage.pools(place):
                if pool is not None and key.name != pool:
                    continue
                for rec in storage.volumes(place or "", key, now):
                    rows.append(volume_json(place, key, rec))
    except OSError as exc:
        fail(f"cannot read the sim fabric: {exc}")
    if output == Output.json:
        print_json(rows)
        return
    table = [
        [
            r["node"] or "(shared)",
            r["pool"],
            r["file"],
            r["format"],
            r["size_mb"],
            r["allocated_mb"],
            r["checksum"][:12],
            len(r["snapshots"]),
            r["partial"],
        ]
        for r in rows
    ]
    columns = ["HOST", "POOL", "FILE", "FORMAT", "SIZE MB", "ALLOCATED MB", "CHECKSUM"]
    print_table(None, [*columns, "SNAPSHOTS", "COPYING (JOB)"], table)


def _print_volume(data: dict[str, Any]) -> None:
    snaps = ", ".join(f"{s['name']} ({s['checksum'][:12]})" for s in data["snapshots"])
    print_fields(
        [
            ("node", data["node"] or "(shared pool)"),
            ("pool", f"{data['pool']} ({data['type']})"),
            ("file", data["file"]),
            ("path", data["path"]),
            ("format", data["format"]),
            ("size_mb", data["size_mb"]),
            ("allocated_mb", data["allocated_mb"]),
            ("checksum", data["checksum"]),
            ("snapshots", snaps or None),
            ("copying (job)", data["partial"]),
        ]
    )


@volume_app.command("show")
def volume_show(
    pool: str = POOL_ARGUMENT,
    file: str = FILE_ARGUMENT,
    node: str | None = NODE_OPTION,
    fabric_dir: Path | None = FABRIC_OPTION,
    data_dir: Path | None = DATA_DIR_OPTION,
    output: Output = OUTPUT_OPTION,
) -> None:
    """Show one volume of a sim pool, its checksum and snapshots.

    With -o json: the volume as `list` shows each.
    """
    storage = _storage(fabric_dir, data_dir, node)
    key = _pool(pool, node)
    data = volume_json(node, key, _find(storage, key, file, node))
    if output == Output.json:
        print_json(data)
        return
    _print_volume(data)


def _random(mb: int) -> Iterator[bytes]:
    for _ in range(mb):
        yield os.urandom(MIB)


@volume_app.command("write")
def volume_write(
    pool: str = POOL_ARGUMENT,
    file: str = FILE_ARGUMENT,
    node: str | None = NODE_OPTION,
    data: str | None = typer.Option(
        None, "--data", metavar="TEXT", help="Write this text at the start of the volume."
    ),
    random_mb: int | None = typer.Option(
        None, "--random-mb", min=1, metavar="N", help="Write N MiB of random data."
    ),
    fabric_dir: Path | None = FABRIC_OPTION,
    data_dir: Path | None = DATA_DIR_OPTION,
    output: Output = OUTPUT_OPTION,
) -> None:
    """Write into a volume of a sim pool behind Bollard's back, as a guest would.

    Give --data TEXT or --random-mb N: the data goes at the start of the volume, its
    checksum changes, its allocation covers what was written. Refused for a volume a copy
    is still filling.

    With -o json: the volume as it now is (as `show` prints it).
    """
    from bollard.sim.storage import StorageRefused

    if (data is None) == (random_mb is None):
        fail("give --data TEXT or --random-mb N (one of the two)")
    storage = _storage(fabric_dir, data_dir, node)
    key = _pool(pool, node)
    old = _find(storage, key, file, node)
    chunks = [data.encode()] if data is not None else _random(random_mb or 0)
    try:
        rec = storage.write(node or "", key, file, chunks, time.time())
    except StorageRefused as exc:
        fail(f"cannot write into {file}: {exc.message}")
    except (ValueError, OSError, TimeoutError) as exc:
        fail(f"cannot write into {file}: {exc}")
    shown = volume_json(node, key, rec)
    if output == Output.json:
        print_json(shown)
        return
    console.print(
        f"wrote into {file} ({key}{'' if node is None else ' on ' + node}) behind Bollard's "
        f"back: checksum {old.checksum[:12]} -> {rec.checksum[:12]}",
        highlight=False,
    )
