"""The disks' part of a libvirt migration (see ``migrate``, ``storage`` and ``pools``): the
check that the target keeps legacy disks and console logs where this host does, preparing
the target (the pools of the disks copied, with what an earlier attempt left there removed;
the shared pools' volumes, which it must see), the offline migration's copy of the volumes,
and removing the copies a migration that ended left unused (the paths it copied, recorded
in the job's record).

Mixed into LibvirtMigrations; these run in its threads, on connections it opens.
"""

from __future__ import annotations

import contextlib
import logging
import posixpath
import time
from collections.abc import Callable
from typing import Any, TypeVar

from bollard.agent.drivers.base import JobStatus
from bollard.agent.drivers.libvirt import domains
from bollard.agent.drivers.libvirt.jobs import JobRecord, JobTable
from bollard.agent.drivers.libvirt.migrate_plan import MIGRATION_LOST, Endpoint, MigrationOutcome
from bollard.agent.drivers.libvirt.pools import DiskPlacement
from bollard.agent.drivers.libvirt.storage import (
    Storage,
    copy_volume,
    ensure_pool,
    lookup_volume,
    remove_disks,
    remove_paths,
)
from bollard.agent.drivers.libvirt.xml import DomainDisk, HostSettings
from bollard.domain.errors import DriverError, DriverInvalidState, DriverPermanent

log = logging.getLogger(__name__)

T = TypeVar("T")

ABORT_LOOK = 0.1  # while copying, look this often whether an abort was asked for


class _Aborted(Exception):
    """An abort was asked for while the migration's disks were being copied."""


class MigrationDisks:
    """Provided by the class it is mixed into: the attributes and helpers declared here."""

    lib: Any
    uri: str
    jobs: JobTable
    storage: Storage
    settings: HostSettings

    def _open(self, uri: str) -> Any:
        raise NotImplementedError

    def _with(self, uri: str, action: str, fn: Callable[[Any], T]) -> T:
        raise NotImplementedError

    def _check_dirs(self, endpoint: Endpoint, target: str, *, has_disks: bool) -> None:
        """The definition names the console log and the disks by path: the target must keep
        them where this host does."""
        console_dir = str(self.settings.console_dir)
        if endpoint.console_dir is not None and endpoint.console_dir != console_dir:
            raise DriverPermanent(
                f"{target} writes console logs to {endpoint.console_dir}, this host to "
                f"{console_dir}: every host needs the same --libvirt-console-dir"
            )
        image_dir = self.storage.image_dir
        if has_disks and endpoint.image_dir is not None and endpoint.image_dir != image_dir:
            raise DriverPermanent(
                f"{target} keeps disks in {endpoint.image_dir}, this host in {image_dir}: "
                "every host needs the same --libvirt-image-dir"
            )

    def _target_disks(self, conn: Any, target: str, disks: DiskPlacement) -> None:
        """Ready the target for the VM's disks: the pools of those copied (libvirt creates
        their volumes in the target's pool of that directory), without the copies an earlier
        attempt left there (a copy onto one could keep some of its data); the shared pools,
        which must show the VM's volumes there."""
        lib = self.lib
        for storage in {pool for _, pool in disks.copied}:
            ensure_pool(lib, conn, storage)
        remove_paths(lib, conn, [disk.path for disk, _ in disks.copied])
        for disk, storage in disks.shared:
            pool = ensure_pool(lib, conn, storage)
            pool.refresh(0)
            if lookup_volume(lib, pool, posixpath.basename(disk.path)) is None:
                raise DriverInvalidState(
                    f"{target} does not see {disk.path} (is its shared pool mounted there?)"
                )

    def _copy_disks(
        self, conn: Any, record: JobRecord, disks: list[tuple[DomainDisk, Storage]]
    ) -> bool:
        """Stream the disks' volumes to the target's pools (an offline migration's copy);
        False when an abort was asked for meanwhile. libvirtError, DriverError."""
        lib, cid = self.lib, record.command_id
        volumes = [(conn.storageVolLookupByPath(d.path), pool) for d, pool in disks]
        total = max(1, sum(int(v.info()[2]) for v, _ in volumes))  # allocated bytes
        copied = 0
        next_look = time.monotonic() + ABORT_LOOK

        def progress(done: int) -> None:
            nonlocal next_look
            # (at most 0.95: moving the definition is still to come)
            self.jobs.progress(cid, 0.95 * min(1.0, (copied + done) / total))
            if time.monotonic() >= next_look:
                next_look = time.monotonic() + ABORT_LOOK
                current = self.jobs.get(cid)
                if current is None or current.abort_reason is not None:
                    raise _Aborted

        target = self._open(record.target_uri)
        try:
            for vol, pool in volumes:
                log.info("libvirt migration %s: copying %s to %s", cid, vol.name(), record.target)
                copy_volume(lib, conn, vol, target, pool, progress)
                copied += int(vol.info()[2])
        except _Aborted:
            log.info("libvirt migration %s: aborted while copying its disks", cid)
            return False
        finally:
            with contextlib.suppress(lib.libvirtError):
                target.close()
        return True

    def _tidy_disks(self, record: JobRecord, outcome: MigrationOutcome) -> None:
        """Remove the copies of the VM's disks a migration that ended left unused: the
        source's when it moved, the target's when it did not, each only where the host has
        no definition of the VM. A VM on neither host keeps every copy (for the operator)."""
        uuid = record.vm_uuid
        if outcome.status == JobStatus.COMPLETED:
            uri, where = self.uri, record.source
        elif not outcome.moved and outcome.error_code != MIGRATION_LOST:
            uri, where = record.target_uri, record.target
        else:
            return
        try:
            self._with(uri, f"remove unused disks of {uuid} on {where}",
                       lambda c: self._drop_unused_disks(c, uuid, record.disks))  # fmt: skip
        except DriverError as exc:
            log.warning("libvirt migration %s: %s (the volumes are left)",
                        record.command_id, exc.message)  # fmt: skip

    def _drop_unused_disks(self, conn: Any, uuid: str, paths: list[str] | None) -> list[str]:
        """The copies at ``paths`` (None: a record of an older agent: the VM's legacy
        volumes, by name), where the host has no definition of the VM."""
        if domains.lookup(self.lib, conn, uuid) is not None:
            return []
        if paths is None:
            return remove_disks(self.lib, conn, self.storage, uuid)
        return remove_paths(self.lib, conn, paths)
