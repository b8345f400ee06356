"""The sim fabric: shared on-disk state of simulated hypervisor hosts (DESIGN.md section 2).

The fabric lives outside every agent process, so simulated VMs keep "running" when an agent
is killed, and ``bollard sim`` can read (and later mutate, for fault injection) ground truth.
"""

from bollard.sim.fabric import Fabric, FabricBusy, SimHost
from bollard.sim.models import HostPower, SimHostRecord, SimVm

__all__ = ["Fabric", "FabricBusy", "HostPower", "SimHost", "SimHostRecord", "SimVm"]
