"""The simulated SR-IOV NICs of a sim host at power-on (issue 22).

A sim host's NICs are kept in FABRIC/sriov/NODE.json by the agent's simulated backend
(bollard.agent.sriov.sim.SimSriov: the agent writes it as a kernel keeps its devices' state,
and the sim package may not import the agent). A real cold boot loses every PF's VFs
(``sriov_numvfs`` back to 0) and the MTU set on it, while the devices and their PCI addresses
stay; so a simulated power-on does the same to that file, and the agent's next start must set
the VF count again and re-apply every VF's settings (its SriovManager does).

The file's format is the agent's: an object ``{"pfs": {DEVICE: {"bus", "vfs_total", "mtu",
"vfs": [...]}}}``; only ``vfs`` and ``mtu`` are rewritten, everything else is kept as it is.
`SimSriov.reboot` does the same from the agent's side (a test checks the two agree).
"""

from __future__ import annotations

import logging
from pathlib import Path

from bollard.sim.files import read_json, write_json_atomic

log = logging.getLogger(__name__)

SRIOV_DIR = "sriov"  # in the fabric; as bollard.agent.sriov_agent.SIM_STATE_DIR
DEFAULT_MTU = 1500  # what a PF has after a boot; as bollard.agent.sriov.sim.DEFAULT_MTU


def nic_file(fabric_root: Path, node: str) -> Path:
    """Where sim host `node`'s simulated NICs are kept (as sriov_agent.sim_state_file)."""
    return fabric_root / SRIOV_DIR / f"{node}.json"


def cold_boot(fabric_root: Path, node: str) -> bool:
    """A cold boot of `node`'s simulated NICs: every PF loses its VFs and gets the default
    MTU back. False when the host has none (no file, or one that cannot be read: logged by
    read_json, left as it is for the agent to report)."""
    path = nic_file(fabric_root, node)
    state = read_json(path)
    if state is None:
        return False
    pfs = state.get("pfs")
    if not isinstance(pfs, dict):
        log.warning("simulated NICs %s: no PFs object; left as it is", path)
        return False
    for device, pf in pfs.items():
        if not isinstance(pf, dict):
            log.warning("simulated NICs %s: PF %s is not an object; left as it is", path, device)
            continue
        pf["vfs"] = []
        pf["mtu"] = DEFAULT_MTU
    write_json_atomic(path, state)
    return True
