"""Size limits shared by VMs, volumes and flavors."""

from __future__ import annotations

MAX_DISKS = 16
MAX_DISK_MB = 64 * 1024 * 1024  # 64 TiB
