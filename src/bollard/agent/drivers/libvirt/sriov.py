"""SR-IOV in the libvirt driver: a VM's NICs on virtual functions (VFs), and which VFs the
host's domains use (the ``VfUseSource`` facility of LibvirtDriver).

The domain XML of both modes is written and read in ``xml``; this module turns a VM's
``NicSpec`` into the ``DomainNic`` the XML is made of, and reads every domain of the host
for ``vf_users``. That read covers domains that are not Bollard's too (by their libvirt
uuid), and the live definition of running domains as well as the persistent one: a VF a
guest holds is taken whatever made the domain or changed it since, and a VF must not be
given to a second VM while any definition names it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from bollard.agent.drivers.base import NicSpec
from bollard.agent.drivers.libvirt import domains
from bollard.agent.drivers.libvirt.errors import Err, code_of
from bollard.agent.drivers.libvirt.vf_xml import vf_uses
from bollard.agent.drivers.libvirt.xml import DomainNic

log = logging.getLogger(__name__)

T = TypeVar("T")


def domain_nic(nic: NicSpec) -> DomainNic:
    """The NIC a domain's XML gets for ``nic``."""
    return DomainNic(
        network=nic.network,
        bridge=nic.bridge,
        mac=nic.mac,
        model=nic.model,
        sriov=nic.sriov,
        mode=nic.mode,
        vf_pci=nic.vf_pci,
        vf_netdev=nic.vf_netdev,
    )


def host_vf_users(lib: Any, conn: Any) -> dict[str, str]:
    """``{VF: domain uuid}`` over every domain of the host (see ``vf_xml.vf_uses`` for how
    a VF is named); where two domains name one VF (Bollard never does that), the first one
    listed is given. Runs in a connection thread."""
    users: dict[str, str] = {}
    for dom in conn.listAllDomains(0):
        try:
            uuid = dom.UUIDString()
            texts = [dom.XMLDesc(domains.XML_INACTIVE)]
            if dom.isActive():
                texts.append(dom.XMLDesc(0))
        except lib.libvirtError as exc:
            if code_of(exc) == Err.NO_DOMAIN:
                continue  # undefined meanwhile: it uses nothing any more
            raise
        for text in texts:
            try:
                for vf in vf_uses(text):
                    users.setdefault(vf, uuid)
            except ValueError as exc:
                log.warning("cannot read the VFs of libvirt domain %s: %s", uuid, exc)
    return users


class LibvirtVfUsers:
    """Mixed into LibvirtDriver, which provides the attributes and helpers declared here."""

    lib: Any

    async def _call(self, action: str, fn: Callable[[Any], T]) -> T:
        raise NotImplementedError

    async def vf_users(self) -> dict[str, str]:
        """``{VF: VM uuid}`` for every VF a domain of this host names (VfUseSource)."""
        return await self._call(
            "read the VFs the domains use", lambda c: host_vf_users(self.lib, c)
        )
