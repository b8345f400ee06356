"""Netlink for SR-IOV: a network device's MTU, and a PF's VF settings (`ip link set PF vf N
...` and reading them back from the PF's IFLA_VFINFO_LIST), through pyroute2.

`Netlink` is the small interface `linux.LinuxSriov` needs, so tests can run the Linux backend
over a fake sysfs tree with a recording fake. `vf_info_list` and `vfs_of` translate between
`VfSettings` and pyroute2's IFLA_VFINFO_LIST attributes; they are pure, so tests check them
with pyroute2's own encoder and decoder, without SR-IOV hardware.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

from pyroute2 import AsyncIPRoute  # type: ignore[import-untyped]
from pyroute2.netlink.exceptions import NetlinkError  # type: ignore[import-untyped]

from bollard.agent.sriov.backend import SriovError
from bollard.domain.sriov import LinkState, VfSettings

RTEXT_FILTER_VF = 1  # ask RTM_GETLINK for the VF list (include/uapi/linux/rtnetlink.h)
LINK_STATES: dict[LinkState, int] = {"auto": 0, "enable": 1, "disable": 2}  # IFLA_VF_LINK_STATE_*
LINK_STATE_NAMES: dict[int, LinkState] = {code: name for name, code in LINK_STATES.items()}
NO_MAC = "00:00:00:00:00:00"


class Netlink(Protocol):
    async def mtu(self, device: str) -> int:
        """The MTU of network device `device`. SriovError: no such device."""
        ...

    async def set_mtu(self, device: str, mtu: int) -> None: ...

    async def vfs(self, pf: str) -> dict[int, VfSettings]:
        """Every VF of PF `pf` as the kernel reports it (by VF index; `mtu` is never set:
        it belongs to the VF's own network device)."""
        ...

    async def set_vf(self, pf: str, index: int, settings: VfSettings) -> None:
        """Set the fields `settings` gives (but `mtu`) on VF `index` of PF `pf`, in one
        message. VLAN and QoS are one netlink attribute, as are the two rates: the caller
        gives both of a pair (None counts as 0)."""
        ...


def vf_info_list(index: int, settings: VfSettings) -> dict[str, Any]:
    """The IFLA_VFINFO_LIST attribute that sets `settings`' given fields on VF `index`."""
    attrs: list[tuple[str, dict[str, Any]]] = []
    if settings.mac is not None:
        attrs.append(("IFLA_VF_MAC", {"vf": index, "mac": settings.mac.lower()}))
    if settings.vlan is not None or settings.qos is not None:
        vlan = {"vf": index, "vlan": settings.vlan or 0, "qos": settings.qos or 0}
        attrs.append(("IFLA_VF_VLAN", vlan))
    if settings.min_tx_rate is not None or settings.max_tx_rate is not None:
        rate = {
            "vf": index,
            "min_tx_rate": settings.min_tx_rate or 0,
            "max_tx_rate": settings.max_tx_rate or 0,
        }
        attrs.append(("IFLA_VF_RATE", rate))
    if settings.spoof_check is not None:
        attrs.append(("IFLA_VF_SPOOFCHK", {"vf": index, "spoofchk": int(settings.spoof_check)}))
    if settings.link_state is not None:
        state = LINK_STATES[settings.link_state]
        attrs.append(("IFLA_VF_LINK_STATE", {"vf": index, "link_state": state}))
    if settings.trust is not None:
        attrs.append(("IFLA_VF_TRUST", {"vf": index, "trust": int(settings.trust)}))
    if settings.query_rss is not None:
        rss = {"vf": index, "rss_query_en": int(settings.query_rss)}
        attrs.append(("IFLA_VF_RSS_QUERY_EN", rss))
    return {"attrs": [("IFLA_VF_INFO", {"attrs": attrs})]}


def vfs_of(link: Any) -> dict[int, VfSettings]:
    """The VFs in an RTM_NEWLINK message's IFLA_VFINFO_LIST (empty when it has none). A
    field the driver does not report (the kernel's -1) is None."""
    vflist = link.get_attr("IFLA_VFINFO_LIST")
    if vflist is None:
        return {}
    found: dict[int, VfSettings] = {}
    for info in vflist.get_attrs("IFLA_VF_INFO"):
        mac = info.get_attr("IFLA_VF_MAC")
        if mac is None:  # the kernel always sends it; without it there is no VF index
            continue
        vlan = info.get_attr("IFLA_VF_VLAN") or {}
        rate = info.get_attr("IFLA_VF_RATE")
        if rate is None:  # kernels before 3.16 report only the maximum
            legacy = info.get_attr("IFLA_VF_TX_RATE") or {}
            rate = {"max_tx_rate": legacy.get("tx_rate")}
        link_state = (info.get_attr("IFLA_VF_LINK_STATE") or {}).get("link_state")
        found[int(mac["vf"])] = VfSettings(
            mac=None if mac["mac"] == NO_MAC else mac["mac"],
            vlan=vlan.get("vlan"),
            qos=vlan.get("qos"),
            min_tx_rate=rate.get("min_tx_rate"),
            max_tx_rate=rate.get("max_tx_rate"),
            spoof_check=_flag(info.get_attr("IFLA_VF_SPOOFCHK"), "spoofchk"),
            link_state=None if link_state is None else LINK_STATE_NAMES.get(link_state),
            trust=_flag(info.get_attr("IFLA_VF_TRUST"), "trust"),
            query_rss=_flag(info.get_attr("IFLA_VF_RSS_QUERY_EN"), "rss_query_en"),
        )
    return found


def _flag(attr: dict[str, Any] | None, name: str) -> bool | None:
    """An on/off VF attribute: 0 or 1, anything else (the kernel's -1) not reported."""
    value = None if attr is None else attr.get(name)
    return bool(value) if value in (0, 1) else None


class Pyroute2Netlink:
    """Netlink through pyroute2's AsyncIPRoute, one socket per call (a call is rare: agent
    start and a VF change). `netns`: act in that network namespace (tests)."""

    def __init__(self, netns: str | None = None) -> None:
        self._netns = netns

    async def mtu(self, device: str) -> int:
        async with self._route() as ipr:
            index = await _index(ipr, device)
            (link,) = await _call(f"{device}: reading its MTU", ipr.link("get", index=index))
            return int(link.get("mtu"))

    async def set_mtu(self, device: str, mtu: int) -> None:
        async with self._route() as ipr:
            index = await _index(ipr, device)
            await _call(f"{device}: setting MTU {mtu}", ipr.link("set", index=index, mtu=mtu))

    async def vfs(self, pf: str) -> dict[int, VfSettings]:
        async with self._route() as ipr:
            index = await _index(ipr, pf)
            request = ipr.link("get", index=index, ext_mask=RTEXT_FILTER_VF)
            (link,) = await _call(f"PF {pf}: reading its VFs", request)
            return vfs_of(link)

    async def set_vf(self, pf: str, index: int, settings: VfSettings) -> None:
        fields = " ".join(f"{k}={v}" for k, v in settings.given().items() if k != "mtu")
        async with self._route() as ipr:
            link = await _index(ipr, pf)
            request = ipr.link("set", index=link, IFLA_VFINFO_LIST=vf_info_list(index, settings))
            await _call(f"PF {pf} VF {index}: setting {fields}", request)

    @asynccontextmanager
    async def _route(self) -> AsyncIterator[Any]:
        try:
            route = AsyncIPRoute(netns=self._netns) if self._netns else AsyncIPRoute()
        except OSError as exc:
            where = f"network namespace {self._netns}" if self._netns else "the host"
            raise SriovError(f"cannot open netlink in {where}: {exc.strerror or exc}") from None
        async with route as ipr:
            yield ipr


async def _index(ipr: Any, device: str) -> int:
    found = await _call(f"{device}: looking it up", ipr.link_lookup(ifname=device))
    if not found:
        raise SriovError(f"no network device {device!r} on this host")
    return int(found[0])


async def _call(what: str, request: Any) -> Any:
    """Await a pyroute2 request; its NetlinkError becomes one line saying what failed."""
    try:
        return await request
    except NetlinkError as exc:
        raise SriovError(f"{what}: {os.strerror(exc.code)}") from None
