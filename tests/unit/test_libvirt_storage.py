"""The libvirt driver's disks against libvirt's test driver (``test:///<node file>``, an
in-memory host of its own per connection): the pool, the volumes, the domain XML's disks. The copies
made by migrations are tested on real daemons (tests/libvirt/test_libvirt_disks.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

libvirt = pytest.importorskip("libvirt", reason="libvirt-python is not installed")

from bollard.agent.drivers.base import (  # noqa: E402
    DiskSource,
    DiskSpec,
    NicSpec,
    VmSpec,
    disk_device,
)
from bollard.agent.drivers.libvirt import LibvirtDriver  # noqa: E402
from bollard.agent.drivers.libvirt import storage as S  # noqa: E402
from bollard.agent.drivers.libvirt.xml import (  # noqa: E402
    DomainDisk as XmlDisk,
)
from bollard.agent.drivers.libvirt.xml import (  # noqa: E402
    DomainNic as XmlNic,
)
from bollard.agent.drivers.libvirt.xml import (  # noqa: E402
    DomainSpec,
    HostSettings,
    domain_xml,
    parse_domain,
    with_devices,
)
from bollard.domain.errors import DriverPermanent  # noqa: E402

T = TypeVar("T")

A = "11111111-1111-4111-8111-111111111111"
B = "22222222-2222-4222-8222-222222222222"


def run(coro: Coroutine[Any, Any, T]) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(10):
            return await coro

    return asyncio.run(bounded())


def fresh_host(tmp_path: Path) -> str:
    node = tmp_path / "node.xml"
    node.write_text(
        "<node><cpu><nodes>1</nodes><sockets>1</sockets><cores>2</cores><threads>1</threads>"
        "<active>2</active><mhz>2000</mhz><model>x86_64</model></cpu>"
        "<memory>4194304</memory></node>"
    )
    return f"test://{node}"


def spec(uuid: str, *sizes: int) -> VmSpec:
    return VmSpec(
        uuid=uuid, name="w", vcpus=1, memory_mb=64, epoch=1,
        disks=[DiskSpec(size_mb=n) for n in sizes],
    )  # fmt: skip


def test_names_and_devices() -> None:
    assert [disk_device(i) for i in (0, 1, 15)] == ["vda", "vdb", "vdp"]
    with pytest.raises(ValueError):
        disk_device(16)
    name = S.volume_name(A.upper(), "vdb")
    assert name == f"{A}-vdb.qcow2" and S.owner_of(name) == A
    assert S.owner_of("debian.qcow2") is None and S.owner_of(f"{A}-vda.raw") is None
    with pytest.raises(ValueError, match="absolute"):
        S.Storage("images")
    assert S.Storage("/srv//images/").image_dir == "/srv/images"


def test_domain_xml_disks_are_read_back_and_added_only_when_missing(tmp_path: Path) -> None:
    vda = XmlDisk(path="/p/a-vda.qcow2", target="vda")
    vdb = XmlDisk(path="/p/a-vdb.qcow2", target="vdb")
    xml = domain_xml(DomainSpec(A, "w", 1, 64, disks=(vda,)), HostSettings(tmp_path))
    assert parse_domain(xml).disks == [vda]
    grown = with_devices(xml, [XmlDisk(path="/elsewhere", target="vda"), vdb])
    assert parse_domain(grown).disks == [vda, vdb]  # vda kept as it was


def test_define_makes_the_pool_and_the_volumes_and_undefine_removes_them(
    tmp_path: Path,
) -> None:
    d = LibvirtDriver(fresh_host(tmp_path), "qemu", tmp_path / "c", image_dir="/images/bollard")
    assert isinstance(d, DiskSource)

    def volumes(conn: Any) -> list[str]:
        return sorted(conn.storagePoolLookupByName("bollard").listVolumes())

    async def go() -> None:
        await d.define(spec(A, 16, 8))
        await d.define(spec(B, 4))
        assert await d._call("list", volumes) == sorted(
            [f"{A}-vda.qcow2", f"{A}-vdb.qcow2", f"{B}-vda.qcow2"]
        )
        disks = await d.disks(A)
        assert [(x.device, x.size_mb, x.path) for x in disks] == [
            ("vda", 16, f"/images/bollard/{A}-vda.qcow2"),
            ("vdb", 8, f"/images/bollard/{A}-vdb.qcow2"),
        ]
        await d.undefine(A)
        assert await d._call("list", volumes) == [f"{B}-vda.qcow2"]  # B's are B's
        # Volumes left without a domain (e.g. by a failed migration) go with an undefine.
        orphan = [DiskSpec(size_mb=1)]
        await d._call("orphan", lambda c: S.ensure_disks(libvirt, c, d.storage, A, orphan))
        await d.undefine(A)
        assert await d._call("list", volumes) == [f"{B}-vda.qcow2"]
        await d.close()

    run(go())


def test_a_pool_of_that_name_elsewhere_is_a_clear_error(tmp_path: Path) -> None:
    d = LibvirtDriver(fresh_host(tmp_path), "qemu", tmp_path / "c", image_dir="/images/bollard")

    def other_pool(conn: Any) -> None:
        S.ensure_pool(libvirt, conn, S.Storage("/srv/other"))

    async def go() -> None:
        await d._call("make the pool", other_pool)
        await d.host_info()  # (only logged: the host still connects)
        with pytest.raises(DriverPermanent, match="--libvirt-image-dir /srv/other"):
            await d.define(spec(A, 8))
        await d.define(spec(B))  # a VM without disks needs no pool
        await d.close()

    run(go())


def test_nics_are_written_read_back_and_added_by_mac(tmp_path: Path) -> None:
    br = XmlNic(bridge="br0", mac="52:54:00:00:00:01")
    net = XmlNic(network="default", mac="52:54:00:00:00:02", model="e1000")
    xml = domain_xml(DomainSpec(A, "w", 1, 64, nics=(br,)), HostSettings(tmp_path))
    assert parse_domain(xml).nics == [br]
    grown = with_devices(xml, nics=(XmlNic(bridge="br9", mac="52:54:00:00:00:01"), net))
    assert parse_domain(grown).nics == [br, net]  # the NIC with that MAC kept as it was


def test_define_gives_the_domain_the_vms_nics(tmp_path: Path) -> None:
    d = LibvirtDriver(fresh_host(tmp_path), "qemu", tmp_path / "c", image_dir="/images/bollard")
    nics = [
        NicSpec(bridge="br0", mac="52:54:00:0a:0b:0c"),
        NicSpec(network="default", mac="52:54:00:0a:0b:0d", model="e1000"),
    ]

    def read(conn: Any) -> list[XmlNic]:
        return parse_domain(conn.lookupByUUIDString(A).XMLDesc(2)).nics

    async def go() -> None:
        await d.define(spec(A).model_copy(update={"nics": nics[:1]}))
        assert [n.mac for n in await d._call("read", read)] == ["52:54:00:0a:0b:0c"]
        await d.define(spec(A).model_copy(update={"nics": nics}))  # the second one is added
        got = await d._call("read", read)
        assert [(n.mac, n.bridge, n.network, n.model) for n in got] == [
            ("52:54:00:0a:0b:0c", "br0", None, "virtio"),
            ("52:54:00:0a:0b:0d", None, "default", "e1000"),
        ]
        await d.close()

    run(go())


def test_a_nic_is_on_a_network_or_a_bridge() -> None:
    from pydantic import ValidationError

    for bad in ({}, {"network": "n", "bridge": "b"}):
        with pytest.raises(ValidationError, match="exactly one"):
            NicSpec(mac="52:54:00:00:00:01", **bad)
    with pytest.raises(ValidationError):
        NicSpec(mac="52:54:00:00:00", bridge="br0")
