"""The ``libvirt`` hypervisor driver (QEMU/KVM through libvirt-python).

Modules: ``driver`` (LibvirtDriver, the HypervisorDriver), ``xml`` (domain XML and Bollard's
metadata), ``domains`` (reading domains, power states), ``connection`` (the connection,
calls in threads with deadlines, reconnection), ``events`` (libvirt's event loop, lifecycle
events), ``errors`` (libvirt errors → Driver* errors), ``host`` (boot id, host identity),
``console`` (serial log tail), ``binding`` (lazy import of libvirt-python), ``migrate``
(live and offline peer-to-peer migration as jobs: the MigrationDriver and
MigrationEndpoint mixin of LibvirtDriver; ``migrate_plan``, ``migrate_disks``),
``job_driver`` (the JobDriver, over migrations and copies), ``jobs`` (the job records that
outlive the agent process), ``storage`` (legacy disks, volumes of libvirt pools),
``pools`` (Bollard's pools as libvirt pools), ``volumes`` (the StorageDriver),
``volume_copy`` (the StorageCopier: copies as jobs), ``attach`` (the VolumeAttacher),
``host_tools`` (qemu-img on the daemon's files), ``qcow2`` (a qcow2 image's snapshot table),
``trash`` (deleted volumes' blocks freed in the background), ``lockd`` (disk lock refusals:
libvirt lock manager leases and QEMU image locks → ``volume-locked``), ``sriov`` (VM NICs
on SR-IOV VFs, and which VFs the host's domains use: VfUseSource), ``vf_xml`` (PCI
addresses and VFs in domain XML).

Importing this package does not import libvirt-python; constructing a LibvirtDriver does
(LibvirtUnavailable, with how to install it, when it is missing).
"""

from bollard.agent.drivers.libvirt.binding import INSTALL_HINT, LibvirtUnavailable, available
from bollard.agent.drivers.libvirt.driver import LibvirtDriver

__all__ = ["INSTALL_HINT", "LibvirtDriver", "LibvirtUnavailable", "available"]
