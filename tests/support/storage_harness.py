"""What the storage contract suite (tests/contract/test_storage_contract.py) needs of a driver
under test: the driver of one host and of a second host, a local pool and a shared pool both
see, and a way to put data into a volume out of band (as a guest writing to its disk would),
so the suite can prove that copies and snapshots carry the data."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bollard.agent.drivers.storage import PoolRef


@dataclass
class StorageHarness:
    # The driver under test (a HypervisorDriver that is also a StorageDriver, StorageCopier,
    # VolumeAttacher and JobDriver), on host `node`.
    driver: Any
    node: str
    # A second host's driver (the target of copies between hosts).
    peer: Any
    peer_node: str
    local_pool: PoolRef  # a pool each host has its own copy of (same path)
    shared_pool: PoolRef  # a pool both hosts see (same directory)
    # write(host, pool, file, data): make the volume's guest-visible content start with `data`
    # (the rest of what it held is kept), out of band, as a guest would.
    write: Callable[[str, PoolRef, str, bytes], None]
    timeout: float = 10.0  # how long one test's driver calls may take in all
    # Copies between hosts run at this rate or faster at most (MiB/s) in `slow_driver`, so
    # that a copy of `slow_size_mb` takes long enough to be aborted while it runs.
    slow_driver: Any = None
    slow_size_mb: int = 64
