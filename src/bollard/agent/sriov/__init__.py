"""SR-IOV on the host (issue 22): the backends that set a PF's VF count and a VF's settings
(`backend`: the interface; `sim`: a simulated NIC; `linux`: sysfs and netlink), the agent's
own record of every VF's settings (`settings_store`) and the manager that re-applies them at
every agent start (`manager`)."""
