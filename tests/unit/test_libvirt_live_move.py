"""The pure parts of the libvirt driver's live moves (agent/drivers/libvirt/live_move.py): the
XML it hands libvirt, the definition it points at the new file, and which files a move under
way makes partial. The moves themselves run on real daemons (tests/libvirt/
test_libvirt_volumes.py, the storage contract suite, tests/libvirt/test_libvirt_storage_e2e.py).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from bollard.agent.drivers.base import JobStatus
from bollard.agent.drivers.libvirt.jobs import JobRecord, MovePlan, PoolDef, partial_targets
from bollard.agent.drivers.libvirt.live_move import (
    KIND,
    copy_destination,
    pointed_at,
    target_xml,
)
from bollard.agent.drivers.libvirt.xml import parse_domain

UUID = "11111111-1111-4111-8111-111111111111"
DOMAIN = f"""<domain type='qemu'><name>bollard-{UUID}</name><uuid>{UUID}</uuid>
<memory unit='MiB'>128</memory><vcpu>1</vcpu><os><type>hvm</type></os><devices>
<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
  <source file='/var/lib/libvirt/images/bollard/{UUID}-vda.qcow2'/><target dev='vda'/></disk>
<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
  <source file='/pools/local/vol-1.qcow2'/><backingStore/><target dev='vdb' bus='virtio'/>
  <alias name='ua-bollard-vol-vdb'/></disk>
</devices></domain>"""


def _plan(target_dir: str = "/pools/shared", target_file: str = "vol-1-m1.qcow2") -> MovePlan:
    return MovePlan(
        device="vdb",
        source_path="/pools/local/vol-1.qcow2",
        source_format="qcow2",
        target_pool=PoolDef(name="bollard-shared", dir=target_dir, shared=True),
        target_file=target_file,
        target_format="raw",
        capacity=16 * 1024 * 1024 + 512,
    )


def test_pointed_at_names_the_new_file_and_keeps_the_rest() -> None:
    changed = pointed_at(DOMAIN, "vdb", "/pools/shared/vol-1-m1.raw", "raw")
    assert changed is not None
    disks = {d.target: d for d in parse_domain(changed).disks}
    assert (disks["vdb"].path, disks["vdb"].format, disks["vdb"].volume) == (
        "/pools/shared/vol-1-m1.raw", "raw", True,
    )  # fmt: skip
    assert disks["vda"].path == f"/var/lib/libvirt/images/bollard/{UUID}-vda.qcow2"
    vdb = next(
        d for d in ET.fromstring(changed).findall("devices/disk") if d.find("alias") is not None
    )
    assert vdb.find("backingStore") is None  # (the old file's chain is not the new one's)
    # Already so, or no such disk: nothing to define.
    assert pointed_at(changed, "vdb", "/pools/shared/vol-1-m1.raw", "raw") is None
    assert pointed_at(DOMAIN, "vdc", "/pools/shared/x.qcow2", "qcow2") is None


def test_the_target_has_the_disks_exact_size_and_the_copy_its_format() -> None:
    volume = ET.fromstring(target_xml(_plan()))
    capacity = volume.find("capacity")
    assert capacity is not None and capacity.get("unit") == "bytes"
    assert capacity.text == str(16 * 1024 * 1024 + 512)
    assert volume.findtext("name") == "vol-1-m1.qcow2"
    fmt = volume.find("target/format")
    assert fmt is not None and fmt.get("type") == "raw"
    disk = ET.fromstring(copy_destination("/pools/shared/vol-1-m1.qcow2", "qcow2"))
    source, driver = disk.find("source"), disk.find("driver")
    assert source is not None and driver is not None and disk.get("type") == "file"
    assert (source.get("file"), driver.get("type")) == ("/pools/shared/vol-1-m1.qcow2", "qcow2")


def _move(cid: str, phase: str, status: JobStatus = JobStatus.RUNNING, **plan: str) -> JobRecord:
    return JobRecord(
        command_id=cid, kind=KIND, vm_uuid=UUID, source="a", target="a", started_at=1.0,
        move_plan=_plan(**plan), phase=phase, status=status,
    )  # fmt: skip


def test_a_move_under_way_makes_its_target_partial_until_its_pivot() -> None:
    records = [
        _move("m1", "copy", target_file="copying.qcow2"),
        _move("m2", "pivot", target_file="pivoting.qcow2"),
        _move("m3", "pivoted", target_file="in-use.qcow2"),  # (the guest uses it)
        _move("m4", "done", JobStatus.COMPLETED, target_file="moved.qcow2"),
        _move("m5", "copy", target_dir="/pools/other", target_file="elsewhere.qcow2"),
    ]
    assert partial_targets(records, "/pools/shared") == {"copying.qcow2", "pivoting.qcow2"}
    assert partial_targets(records, "/pools/other") == {"elsewhere.qcow2"}
