"""The pyroute2 netlink of the Linux SR-IOV backend (bollard.agent.sriov.netlink).

Without SR-IOV hardware: the VF attributes Bollard sends and reads cross pyroute2's real
encoder and decoder; and in a network namespace of this host's kernel (root only) a veth pair
stands in for a NIC: its MTU is set and read back, and every VF call on it (a device without
VFs) fails as one clean line. Setting or reading a real VF needs a NIC with SR-IOV: see the
README's SR-IOV section for what these tests cannot reach.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from pyroute2 import AsyncIPRoute, netns
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from bollard.agent.sriov.backend import SriovError
from bollard.agent.sriov.linux import LinuxSriov
from bollard.agent.sriov.netlink import Pyroute2Netlink, vf_info_list, vfs_of
from bollard.domain.sriov import PfConfig, VfSettings
from tests.support.sriov_host import FakeHost

T = TypeVar("T")
U32_UNSET = 0xFFFFFFFF  # the kernel's -1 for what a driver does not report


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def _wire(attrs: list[Any]) -> Any:
    msg = ifinfmsg()
    msg["attrs"] = attrs
    msg.encode()
    decoded = ifinfmsg(msg.data)
    decoded.decode()
    return decoded


def _sent(index: int, settings: VfSettings) -> dict[str, dict[str, Any]]:
    """What `vf_info_list` puts on the wire, by attribute name, as the kernel decodes it."""
    link = _wire([("IFLA_VFINFO_LIST", vf_info_list(index, settings))])
    (info,) = link.get_attr("IFLA_VFINFO_LIST").get_attrs("IFLA_VF_INFO")
    return {
        name: {k: v for k, v in value.items() if k != "header"} for name, value in info["attrs"]
    }


# --- the attributes, through pyroute2's codec ----------------------------------------------------


def test_every_field_goes_out_as_its_kernel_attribute() -> None:
    settings = VfSettings(
        mac="52:54:00:AA:BB:CC",
        vlan=100,
        qos=3,
        min_tx_rate=10,
        max_tx_rate=100,
        spoof_check=False,
        link_state="disable",
        trust=True,
        query_rss=True,
        mtu=9000,  # not a VF attribute: the VF's own device has it
    )
    assert _sent(5, settings) == {
        "IFLA_VF_MAC": {"vf": 5, "mac": "52:54:00:aa:bb:cc"},
        "IFLA_VF_VLAN": {"vf": 5, "vlan": 100, "qos": 3},
        "IFLA_VF_RATE": {"vf": 5, "min_tx_rate": 10, "max_tx_rate": 100},
        "IFLA_VF_SPOOFCHK": {"vf": 5, "spoofchk": 0},
        "IFLA_VF_LINK_STATE": {"vf": 5, "link_state": 2},
        "IFLA_VF_TRUST": {"vf": 5, "trust": 1},
        "IFLA_VF_RSS_QUERY_EN": {"vf": 5, "rss_query_en": 1},
    }


def test_only_the_given_fields_go_out() -> None:
    assert _sent(0, VfSettings(trust=False)) == {"IFLA_VF_TRUST": {"vf": 0, "trust": 0}}


def _kernel_vf(index: int, **values: int | str) -> tuple[str, dict[str, Any]]:
    fields = {"mac": "00:00:00:00:00:00", "vlan": 0, "qos": 0, "min": 0, "max": 0}
    fields |= {"spoofchk": 1, "link_state": 0, "trust": 0, "rss": 0}
    fields |= values
    attrs = [
        ("IFLA_VF_MAC", {"vf": index, "mac": fields["mac"]}),
        ("IFLA_VF_VLAN", {"vf": index, "vlan": fields["vlan"], "qos": fields["qos"]}),
        ("IFLA_VF_TX_RATE", {"vf": index, "tx_rate": fields["max"]}),
        ("IFLA_VF_RATE", {"vf": index, "min_tx_rate": fields["min"], "max_tx_rate": fields["max"]}),
        ("IFLA_VF_SPOOFCHK", {"vf": index, "spoofchk": fields["spoofchk"]}),
        ("IFLA_VF_LINK_STATE", {"vf": index, "link_state": fields["link_state"]}),
        ("IFLA_VF_RSS_QUERY_EN", {"vf": index, "rss_query_en": fields["rss"]}),
        ("IFLA_VF_TRUST", {"vf": index, "trust": fields["trust"]}),
    ]
    return ("IFLA_VF_INFO", {"attrs": attrs})


def test_the_vfs_are_read_from_the_kernels_vf_list() -> None:
    link = _wire(
        [
            ("IFLA_IFNAME", "ens1f0"),
            ("IFLA_NUM_VF", 2),
            (
                "IFLA_VFINFO_LIST",
                {
                    "attrs": [
                        _kernel_vf(0),
                        _kernel_vf(
                            1,
                            mac="52:54:00:01:02:03",
                            vlan=7,
                            qos=1,
                            min=5,
                            max=50,
                            spoofchk=0,
                            link_state=1,
                            trust=1,
                            rss=1,
                        ),
                    ]
                },
            ),
        ]
    )
    assert vfs_of(link) == {
        0: VfSettings(
            vlan=0,
            qos=0,
            min_tx_rate=0,
            max_tx_rate=0,
            spoof_check=True,
            link_state="auto",
            trust=False,
            query_rss=False,
        ),
        1: VfSettings(
            mac="52:54:00:01:02:03",
            vlan=7,
            qos=1,
            min_tx_rate=5,
            max_tx_rate=50,
            spoof_check=False,
            link_state="enable",
            trust=True,
            query_rss=True,
        ),
    }


def test_what_a_driver_does_not_report_is_none() -> None:
    unreported = _kernel_vf(0, spoofchk=U32_UNSET, trust=U32_UNSET, rss=U32_UNSET, link_state=9)
    (vf,) = vfs_of(_wire([("IFLA_VFINFO_LIST", {"attrs": [unreported]})])).values()
    assert (vf.spoof_check, vf.trust, vf.query_rss, vf.link_state) == (None, None, None, None)


def test_a_device_without_vfs_has_none() -> None:
    assert vfs_of(_wire([("IFLA_IFNAME", "eth0")])) == {}


# --- a real kernel: a veth pair in a network namespace ------------------------------------------


@pytest.fixture
def namespace() -> Iterator[str]:
    """A new network namespace holding the veth pair v0 <-> v1."""
    if os.geteuid() != 0:
        pytest.skip("creating a network namespace needs root")
    name = f"bollard-sriov-{uuid.uuid4().hex[:8]}"
    try:
        netns.create(name)
    except OSError as exc:
        pytest.skip(f"cannot create a network namespace here: {exc}")
    try:

        async def veth() -> None:
            async with AsyncIPRoute(netns=name) as ipr:
                await ipr.link("add", ifname="v0", kind="veth", peer="v1")

        run(veth())
        yield name
    finally:
        netns.remove(name)


def test_the_mtu_is_set_and_read_back(namespace: str) -> None:
    netlink = Pyroute2Netlink(namespace)
    assert run(netlink.mtu("v0")) == 1500
    run(netlink.set_mtu("v0", 9000))
    assert run(netlink.mtu("v0")) == 9000
    assert run(Pyroute2Netlink(namespace).mtu("v1")) == 1500  # its peer untouched


def test_a_refused_mtu_is_one_line(namespace: str) -> None:
    with pytest.raises(SriovError, match=r"^v0: setting MTU 10: Invalid argument$"):
        run(Pyroute2Netlink(namespace).set_mtu("v0", 10))
    assert run(Pyroute2Netlink(namespace).mtu("v0")) == 1500


def test_an_unknown_device_is_one_line(namespace: str) -> None:
    netlink = Pyroute2Netlink(namespace)
    for call in (netlink.mtu("nope0"), netlink.set_mtu("nope0", 1500), netlink.vfs("nope0")):
        with pytest.raises(SriovError, match=r"^no network device 'nope0' on this host$"):
            run(call)


def test_a_device_without_vfs_reports_none_and_refuses_vf_settings(namespace: str) -> None:
    netlink = Pyroute2Netlink(namespace)
    assert run(netlink.vfs("v0")) == {}
    settings = VfSettings(vlan=100, qos=0, trust=True)
    with pytest.raises(
        SriovError, match=r"^PF v0 VF 0: setting vlan=100 qos=0 trust=True: Operation not supp"
    ):
        run(netlink.set_vf("v0", 0, settings))


def test_the_linux_backend_sets_a_real_pf_mtu(namespace: str, tmp_path: Path) -> None:
    """The PF's sysfs side is fake (no SR-IOV here), its netlink side the kernel's."""
    host = FakeHost(tmp_path / "sys", {"v0": 4})
    backend = LinuxSriov(host.root, Pyroute2Netlink(namespace), sysfs_write=host.sysfs_write)
    pf = run(backend.setup(PfConfig(device="v0", vfs=0, physnet="p", mtu=9000)))
    assert (pf.mtu, pf.vfs) == (9000, [])
    assert run(Pyroute2Netlink(namespace).mtu("v0")) == 9000


def test_vfs_the_kernel_does_not_report_are_one_line(namespace: str, tmp_path: Path) -> None:
    """sysfs shows VFs (fake) that the kernel's VF list does not have (a veth has none)."""
    host = FakeHost(tmp_path / "sys", {"v0": 4})
    backend = LinuxSriov(host.root, Pyroute2Netlink(namespace), sysfs_write=host.sysfs_write)
    with pytest.raises(SriovError, match=r"^PF v0: the kernel does not report VF 0$"):
        run(backend.setup(PfConfig(device="v0", vfs=2, physnet="p")))
