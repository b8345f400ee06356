"""The sim fabric: shared on-disk state of simulated hypervisor hosts (DESIGN.md section 2).

The fabric lives outside every agent process, so simulated VMs keep "running" when an agent
is killed, and ``bollard sim`` can read ground truth and inject faults.
"""

from bollard.sim.fabric import Fabric, FabricBusy, SimHost
from bollard.sim.models import (
    ExecutedOp,
    FaultMode,
    HostPower,
    JobState,
    SimFault,
    SimHostRecord,
    SimJob,
    SimVm,
)

__all__ = [
    "ExecutedOp",
    "Fabric",
    "FabricBusy",
    "FaultMode",
    "HostPower",
    "JobState",
    "SimFault",
    "SimHost",
    "SimHostRecord",
    "SimJob",
    "SimVm",
]
