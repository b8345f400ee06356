"""The fleet simulator: many sim agents in one process, for scale tests and benchmarks.

``bollard fleet`` enrolls N nodes on a running server, runs one agent per node in this
process (the agent's own session code over one real WebSocket each, with the in-memory
hypervisor of bollard.agent.drivers.memory), creates M VMs per node through the API, keeps
every agent heartbeating and, with ``--churn``, runs a steady rate of VM operations.

- ``agents``: the agents and their shared in-memory hypervisor fabric;
- ``api``: what the fleet asks of the server's REST API (async);
- ``tokens``: the nodes' tokens, kept in the fleet's data dir so a second run reuses them;
- ``churn``: the steady rate of start, stop and migrate operations;
- ``runner``: the phases of a run and the status the fleet reports.
"""
