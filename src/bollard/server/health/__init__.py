"""Node health: heartbeat monitoring, fencing of dead nodes, recovery of their HA VMs."""
