"""SQLAlchemy table definitions. The schema itself is created only by Alembic migrations."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

settings = Table(
    "settings",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("value", Text, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

nodes = Table(
    "nodes",
    metadata,
    Column("name", String(63), primary_key=True),
    Column("token_hash", String(128), nullable=False),
    Column("health", String(20), nullable=False),
    Column("scheduling", String(20), nullable=False),
    Column("connected", Boolean, nullable=False, default=False),
    Column("vcpus", Integer, nullable=False, default=0),
    Column("memory_mb", Integer, nullable=False, default=0),
    Column("allocated_vcpus", Integer, nullable=False, default=0),
    Column("allocated_memory_mb", Integer, nullable=False, default=0),
    Column("driver", String(40)),
    Column("agent_incarnation", String(64)),
    Column("boot_id", String(64)),
    Column("last_heartbeat", DateTime(timezone=True)),
    Column("last_seq", BigInteger, nullable=False, default=0),
    Column("load", Float, nullable=True),
    Column("power_driver", String(20), nullable=True),
    Column("power_address", String(255), nullable=True),
    Column("power_secret", Text, nullable=True),  # encrypted credentials (see server/secrets)
    Column("health_since", DateTime(timezone=True), nullable=True),
    # The host's clock at its last accepted report, and the agent incarnation whose full
    # report host_vms reflects (NULL until the current session has sent one).
    Column("report_host_time", Float, nullable=True),
    Column("inventory_incarnation", String(64), nullable=True),
    Column("migration_endpoint", JSON, nullable=True),  # from the agent's hello
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # Per-node maintenance (drained, not fenced while on); its shutdown policy (NULL:
    # ha.shutdown_policy) and the clean shutdown its agent announced last (kind, when).
    Column("maintenance", Boolean, nullable=False, default=False, server_default=false()),
    Column("shutdown_policy", String(20), nullable=True),
    Column("shutdown_kind", String(20), nullable=True),
    Column("shutdown_at", DateTime(timezone=True), nullable=True),
    # The server holding the node's agent session (NULL: not connected); no foreign key, as
    # the rows of dead servers are pruned.
    Column("server_id", String(36), nullable=True),
)

Index("ix_nodes_token_hash", nodes.c.token_hash, unique=True)

vms = Table(
    "vms",
    metadata,
    Column("uuid", String(36), primary_key=True),
    Column("name", String(63), nullable=False, unique=True),
    Column("node", String(63), ForeignKey("nodes.name"), nullable=True),
    Column("vcpus", Integer, nullable=False),
    Column("memory_mb", Integer, nullable=False),
    Column("epoch", Integer, nullable=False, default=1),
    Column("vm_state", String(20), nullable=False),
    Column("task_state", String(30), nullable=True),
    Column("task_id", String(36), nullable=True),
    Column("desired_power", String(20), nullable=False),
    Column("observed_power", String(20), nullable=False),
    Column("observed_at", DateTime(timezone=True), nullable=True),
    Column("observed_seq", BigInteger, nullable=False, default=0),
    Column("fault", Text, nullable=True),
    Column("previous_node", String(63), nullable=True),
    Column("migration_method", String(20), nullable=False, default="default"),
    Column("node_limit", JSON, nullable=True),
    Column("node_selector", String(20), nullable=True),
    Column("on_lost", String(20), nullable=False, default="none"),
    Column("ha", String(20), nullable=True),  # restart | none; NULL: restart if desired running
    Column("ha_priority", Integer, nullable=False, default=0),
    Column("autostart", Boolean, nullable=False, default=False),
    # (A VM's disks are the volumes attached to it: see `volumes`.)
    # Network interfaces, in order: [{"mac", "network" or "bridge", "model"}, ...] (fixed at
    # creation; each MAC is also a row of `macs`).
    Column("nics", JSON, nullable=False, default=list, server_default=text("'[]'")),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # The flavor the VM was last given, as it was then ({"id", "name", "vcpus", "memory_mb",
    # "disk_mb", "properties"}); NULL: its size was given by hand. `flavor_id` repeats its id
    # (a flavor in use is not deleted).
    Column("flavor", JSON, nullable=True),
    Column("flavor_id", String(36), nullable=True),
    # A cell's copy of a VM moving between cells that is not the one shown (left out of
    # lists, counts and quotas; still holding its node's resources and its MACs).
    Column("hidden", Boolean, nullable=False, default=False, server_default=false()),
    # HA policies (domain/ha.py): its group (NULL: none); what holds HA back (ignored, error;
    # NULL: nothing); its restart and relocate limits (NULL: ha.max_restart, ha.max_relocate)
    # and the restarts and relocations counted against them since it last ran steadily.
    Column("ha_group", String(63), nullable=True),
    Column("ha_hold", String(20), nullable=True),
    Column("max_restart", Integer, nullable=True),
    Column("max_relocate", Integer, nullable=True),
    Column("ha_restarts", Integer, nullable=False, default=0, server_default="0"),
    Column("ha_relocates", Integer, nullable=False, default=0, server_default="0"),
)
Index("ix_vms_node", vms.c.node)
Index("ix_vms_ha_group", vms.c.ha_group)
Index("ix_vms_flavor_id", vms.c.flavor_id)

# The MAC address of every NIC of every VM, so that no two NICs share one (assigned ones
# are random: at 100,000 VMs they would collide without this check). Removed with the VM.
macs = Table(
    "macs",
    metadata,
    Column("mac", String(17), primary_key=True),  # lower case, aa:bb:cc:dd:ee:ff
    Column("vm_uuid", String(36), nullable=False),
)
Index("ix_macs_vm_uuid", macs.c.vm_uuid)

# What each host reports it has (written on change only: full report at connect, then
# deltas), whether or not the database knows the VM: orphans are found here.
host_vms = Table(
    "host_vms",
    metadata,
    Column("node", String(63), ForeignKey("nodes.name", ondelete="CASCADE"), primary_key=True),
    Column("uuid", String(36), primary_key=True),
    Column("name", String(63), nullable=False),
    Column("power", String(20), nullable=False),
    Column("vcpus", Integer, nullable=False),
    Column("memory_mb", Integer, nullable=False),
    Column("epoch", Integer, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("changed_at", DateTime(timezone=True), nullable=False),
)
Index("ix_host_vms_uuid", host_vms.c.uuid)

tasks = Table(
    "tasks",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("type", String(40), nullable=False),
    Column("vm_uuid", String(36), nullable=True),
    Column("vm_name", String(63), nullable=True),
    Column("node", String(63), nullable=True),
    Column("state", String(20), nullable=False),
    Column("params", JSON, nullable=False),
    Column("error", Text, nullable=True),
    Column("result", JSON, nullable=True),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("actor", String(100), nullable=True),  # who asked for it ("system": the server)
    # The API request that asked for it (its X-Request-Id); NULL: the server's own decision
    # or a task from before revision 0012 (its action is shown as req-<task id>).
    Column("request_id", String(64), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Column("owner", String(36), nullable=True),  # the server running it
)
Index("ix_tasks_vm_uuid", tasks.c.vm_uuid)
Index("ix_tasks_state", tasks.c.state)

commands = Table(
    "commands",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("node", String(63), nullable=False),
    Column("type", String(40), nullable=False),
    Column("args", JSON, nullable=False),
    Column("vm_uuid", String(36), nullable=True),
    Column("epoch", Integer, nullable=False, default=0),
    Column("task_id", String(36), ForeignKey("tasks.id"), nullable=True),
    Column("state", String(30), nullable=False),
    Column("agent_state", String(30), nullable=True),
    Column("answer", JSON, nullable=True),
    Column("error", Text, nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("deadline", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("duration", Float, nullable=True),
)
Index("ix_commands_node_state", commands.c.node, commands.c.state)
Index("ix_commands_vm_uuid", commands.c.vm_uuid)
Index("ix_commands_task_id", commands.c.task_id)

command_history = Table(
    "command_history",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("command_id", String(36), ForeignKey("commands.id", ondelete="CASCADE"), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("from_state", String(30), nullable=True),
    Column("to_state", String(30), nullable=False),
    Column("note", Text, nullable=True),
)
Index("ix_command_history_command_id", command_history.c.command_id)

task_steps = Table(
    "task_steps",
    metadata,
    Column("task_id", String(36), ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True),
    Column("idx", Integer, primary_key=True),
    Column("name", String(60), nullable=False),
    Column("state", String(20), nullable=False),
    Column("result", JSON, nullable=True),
    Column("commands", JSON, nullable=True),  # call key -> command id, for resumption
    Column("error", Text, nullable=True),
    Column("started_at", DateTime(timezone=True), nullable=True),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Column("undo_started_at", DateTime(timezone=True), nullable=True),
    Column("undo_finished_at", DateTime(timezone=True), nullable=True),
    Column("undo_error", Text, nullable=True),
    # Temporary errors: attempts made so far, and when a `waiting` step runs again.
    Column("attempts", Integer, nullable=False, default=0, server_default=text("0")),
    Column("retry_at", DateTime(timezone=True), nullable=True),
)

events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("kind", String(60), nullable=False),
    Column("vm_uuid", String(36), nullable=True),
    Column("vm_name", String(63), nullable=True),
    Column("node", String(63), nullable=True),
    Column("task_id", String(36), nullable=True),
    Column("message", Text, nullable=False),
    Column("data", JSON, nullable=True),
    # Who caused it: a user or token name for an API call, "system" for the server's own decisions.
    Column("actor", String(100), nullable=True),
)
Index("ix_events_vm_uuid", events.c.vm_uuid)
Index("ix_events_task_id", events.c.task_id)
Index("ix_events_actor", events.c.actor)

users = Table(
    "users",
    metadata,
    Column("name", String(63), primary_key=True),
    Column("role", String(20), nullable=False),  # a Role value (domain/policy.py)
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(100), nullable=True),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("user_name", String(63), ForeignKey("users.name", ondelete="CASCADE"), nullable=False),
    Column("description", String(200), nullable=True),
    Column("token_hash", String(128), nullable=False, unique=True),  # SHA-256; never the token
    # A token may act with a narrower role than its user's (None: the user's role).
    Column("role", String(20), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("last_used_at", DateTime(timezone=True), nullable=True),
)
Index("ix_api_tokens_user_name", api_tokens.c.user_name)

leases = Table(
    "leases",
    metadata,
    Column("name", String(60), primary_key=True),
    Column("holder", String(64), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    # The fencing token (store/leases.py take): grows each time the lease is taken anew.
    Column("token", BigInteger, nullable=False, default=0, server_default=text("0")),
    Column("acquired_at", DateTime(timezone=True), nullable=True),
)

# Several servers (domain/servers.py, store/servers.py): each server process's row, whose
# `expires_at` is its membership lease; and the messages servers leave each other (relay).
servers = Table(
    "servers",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(100), nullable=False),
    Column("url", String(255), nullable=False),
    Column("version", String(40), nullable=False),
    Column("protocols", JSON, nullable=False),
    Column("schema_revision", String(20), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("renewed_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("stopped_at", DateTime(timezone=True), nullable=True),
    Column("state", String(20), nullable=False),  # a ServerState value
)
Index("ix_servers_state", servers.c.state)

relay = Table(
    "relay",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("to_server", String(36), nullable=False),
    Column("from_server", String(36), nullable=False),
    Column("node", String(63), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("body", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
Index("ix_relay_to_server", relay.c.to_server)

# Storage pools (domain/storage.py). `path` NULL: each host's default storage directory (local
# pools only); `nodes` NULL: every node sees the pool.
pools = Table(
    "pools",
    metadata,
    Column("name", String(63), primary_key=True),
    Column("type", String(10), nullable=False),
    Column("path", String(1024), nullable=True),
    Column("nodes", JSON, nullable=True),
    Column("description", String(200), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# Each pool as each of its hosts last reported it (the storage monitor's queries).
pool_hosts = Table(
    "pool_hosts",
    metadata,
    Column("pool", String(63), ForeignKey("pools.name", ondelete="CASCADE"), primary_key=True),
    Column("node", String(63), ForeignKey("nodes.name", ondelete="CASCADE"), primary_key=True),
    Column("capacity_mb", BigInteger, nullable=True),
    Column("free_mb", BigInteger, nullable=True),
    Column("error", Text, nullable=True),
    Column("reported_at", DateTime(timezone=True), nullable=False),
)

volumes = Table(
    "volumes",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(63), nullable=False, unique=True),
    Column("pool", String(63), ForeignKey("pools.name"), nullable=False),
    # The host that has it (local pools); NULL in a shared pool.
    Column("node", String(63), nullable=True),
    Column("file", String(128), nullable=False),
    Column("format", String(10), nullable=False),
    Column("size_mb", BigInteger, nullable=False),
    Column("state", String(20), nullable=False),
    Column("vm_uuid", String(36), nullable=True),
    Column("device", String(8), nullable=True),
    Column("task_id", String(36), nullable=True),
    Column("delete_with_vm", Boolean, nullable=False, default=False),
    Column("fault", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # The resize (a `migrations` row) this volume belongs to: the copy it makes for the new
    # size, or the original it keeps (`reserved`) until it is confirmed or reverted.
    Column("migration_id", String(36), nullable=True),
)
Index("ix_volumes_vm_uuid_device", volumes.c.vm_uuid, volumes.c.device, unique=True)
Index("ix_volumes_migration_id", volumes.c.migration_id)
Index("ix_volumes_pool_file", volumes.c.pool, volumes.c.file)

volume_snapshots = Table(
    "volume_snapshots",
    metadata,
    Column("volume_id", String(36), ForeignKey("volumes.id", ondelete="CASCADE"), primary_key=True),
    Column("name", String(63), primary_key=True),
    Column("size_mb", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# Flavors: named sizes for VMs (domain/flavors.py). A VM keeps a copy of the one it was given.
flavors = Table(
    "flavors",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(63), nullable=False, unique=True),
    Column("vcpus", Integer, nullable=False),
    Column("memory_mb", Integer, nullable=False),
    Column("disk_mb", BigInteger, nullable=False),  # the root disk (vda); 0: none asked for
    Column("description", String(200), nullable=True),
    Column("properties", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# Migration records (domain/migrations.py): every migration, HA restart and resize of a VM,
# kept after it ends. A finished resize's `source_hold` ({"node", "vcpus", "memory_mb"}) is
# what the source node keeps allocated for a revert until it is confirmed or reverted.
migrations = Table(
    "migrations",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("vm_uuid", String(36), nullable=False),
    Column("vm_name", String(63), nullable=False),
    Column("type", String(20), nullable=False),
    Column("source", String(63), nullable=True),
    Column("dest", String(63), nullable=True),
    Column("status", String(20), nullable=False),
    Column("task_id", String(36), nullable=True),
    Column("old_flavor", JSON, nullable=True),
    Column("new_flavor", JSON, nullable=True),
    Column("source_hold", JSON, nullable=True),
    Column("error", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=True),
)
Index("ix_migrations_vm_uuid", migrations.c.vm_uuid)
Index("ix_migrations_status", migrations.c.status)

# Cells (API database only: `bollard api`). A cell is a `bollard server` with its own
# database; the API server calls it at `url` with its admin token, kept sealed (server/secrets.py).
cells = Table(
    "cells",
    metadata,
    Column("name", String(63), primary_key=True),
    Column("url", String(500), nullable=False),
    Column("token_sealed", Text, nullable=False),
    Column("ca_pem", Text, nullable=True),  # the CA the cell's TLS certificate is checked with
    Column("disabled", Boolean, nullable=False, default=False, server_default=false()),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # How much a VM moving between cells prefers this cell's nodes when it is its own cell
    # (NULL: scheduler.cross_cell_weight_multiplier).
    Column("weight_multiplier", Float, nullable=True),
)

# Which cell each node and each VM is in (API database only). Written when the API server
# creates a VM, learnt from the cells for nodes, repaired whenever a cell says otherwise.
host_mappings = Table(
    "host_mappings",
    metadata,
    Column("node", String(63), primary_key=True),
    Column("cell", String(63), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
Index("ix_host_mappings_cell", host_mappings.c.cell, host_mappings.c.node)

vm_mappings = Table(
    "vm_mappings",
    metadata,
    Column("name", String(63), primary_key=True),
    Column("uuid", String(36), nullable=True),  # NULL until the cell has answered the create
    Column("cell", String(63), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
Index("ix_vm_mappings_cell", vm_mappings.c.cell, vm_mappings.c.name)

# HA groups (domain/ha.py): nodes with priorities.
ha_groups = Table(
    "ha_groups",
    metadata,
    Column("name", String(63), primary_key=True),
    Column("restricted", Boolean, nullable=False, default=False, server_default=false()),
    Column("nofailback", Boolean, nullable=False, default=False, server_default=false()),
    Column("description", Text, nullable=False, default="", server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

ha_group_nodes = Table(
    "ha_group_nodes",
    metadata,
    Column(
        "group_name",
        String(63),
        ForeignKey("ha_groups.name", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("node", String(63), primary_key=True),  # (a node not enrolled yet may be named)
    Column("priority", Integer, nullable=False, default=0, server_default="0"),
)

# Affinity rules between VMs: kept together on one node, or apart.
affinity_rules = Table(
    "affinity_rules",
    metadata,
    Column("name", String(63), primary_key=True),
    Column("kind", String(20), nullable=False),  # together | apart
    Column("strict", Boolean, nullable=False, default=False, server_default=false()),
    Column("description", Text, nullable=False, default="", server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

affinity_rule_vms = Table(
    "affinity_rule_vms",
    metadata,
    Column(
        "rule",
        String(63),
        ForeignKey("affinity_rules.name", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("vm_uuid", String(36), primary_key=True),
)
Index("ix_affinity_rule_vms_vm_uuid", affinity_rule_vms.c.vm_uuid)

# SR-IOV (domain/sriov.py, store/sriov.py): each node's physical functions as its agent last
# reported them (gone with the node), and their virtual functions with the VM NIC holding each.
sriov_pfs = Table(
    "sriov_pfs",
    metadata,
    Column("node", String(63), ForeignKey("nodes.name", ondelete="CASCADE"), primary_key=True),
    Column("device", String(15), primary_key=True),  # its network device, e.g. ens1f0
    Column("physnet", String(63), nullable=False),  # the physical network it is cabled to
    Column("pci", String(16), nullable=False),  # "" when the host did not say
    Column("mtu", Integer, nullable=True),
    Column("vfs_total", Integer, nullable=False),  # the most VFs the device supports
    Column("vfs", Integer, nullable=False),  # how many VFs it has
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
Index("ix_sriov_pfs_physnet", sriov_pfs.c.physnet)

# A VF is held by one VM NIC (`used_by`, `mac`) from its claim until its release; `task_id`
# names the task whose claim is not committed yet (a migration's or HA restart's target), so
# that the task's rollback releases only what it claimed. `settings` are the ones Bollard set
# (desired), `applied` the ones the host reported, `host_used_by` the VM whose definition uses
# the VF on the host (for the reconciler, which compares it with `used_by`).
sriov_vfs = Table(
    "sriov_vfs",
    metadata,
    Column("node", String(63), primary_key=True),
    Column("pf", String(15), primary_key=True),
    Column("idx", Integer, primary_key=True),
    Column("pci", String(16), nullable=False),
    Column("netdev", String(15), nullable=True),  # NULL while bound to vfio-pci
    Column("settings", JSON, nullable=False),
    Column("applied", JSON, nullable=False),
    Column("host_used_by", String(36), nullable=True),
    Column("used_by", String(36), nullable=True),
    Column("mac", String(17), nullable=True),
    Column("task_id", String(36), nullable=True),
    Column("claimed_at", DateTime(timezone=True), nullable=True),
    ForeignKeyConstraint(
        ["node", "pf"], ["sriov_pfs.node", "sriov_pfs.device"], ondelete="CASCADE"
    ),
    UniqueConstraint("node", "pci"),
    UniqueConstraint("node", "mac"),  # a NIC holds one VF on a node (NULLs are distinct)
)
Index("ix_sriov_vfs_used_by", sriov_vfs.c.used_by)
