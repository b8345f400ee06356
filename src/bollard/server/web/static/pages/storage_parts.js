// @ts-check
/** What the storage pages (pools, pool, volumes, volume) share: routes, volume states and
 * which actions each allows, sizes as an operator types and reads them, which live events
 * concern a page, the confirmation texts, and the tables drawn from the API's answers
 * (`PoolOut`, `VolumeOut`, `SnapshotOut` of the storage spec). Pure builders: no state, no
 * requests. */
import { h, link, table } from "../js/dom.js";
import { ago, memory, ratio, when } from "../js/format.js";
import { badge, bar } from "../js/ui.js";
import { nodeRoute, taskRoute, vmRoute } from "./vm_common.js";

/**
 * A pool as `GET /api/v1/pools` gives it.
 * @typedef {object} Pool
 * @property {string} name
 * @property {"local" | "shared"} type
 * @property {string | null} path null: each host's default storage directory
 * @property {string[] | null} nodes null: every node
 * @property {string | null} description
 * @property {string} created_at
 * @property {number} volumes
 * @property {number} provisioned_mb
 * @property {number | null} capacity_mb
 * @property {number | null} free_mb
 * @property {PoolHost[]} hosts
 */
/** @typedef {{node: string, capacity_mb: number | null, free_mb: number | null, reported_at: string | null, error: string | null}} PoolHost */
/**
 * A volume as `GET /api/v1/volumes` gives it.
 * @typedef {object} Volume
 * @property {string} id
 * @property {string} name
 * @property {string} pool
 * @property {"local" | "shared"} pool_type
 * @property {string | null} node
 * @property {string} file
 * @property {"qcow2" | "raw"} format
 * @property {number} size_mb
 * @property {string} state
 * @property {string | null} vm
 * @property {string | null} vm_uuid
 * @property {string | null} device
 * @property {string | null} task_id
 * @property {boolean} delete_with_vm
 * @property {string | null} fault
 * @property {number} snapshots
 * @property {{node: string, epoch: number} | null} lock
 * @property {string} created_at
 * @property {string} updated_at
 */
/** @typedef {{name: string, size_mb: number, created_at: string}} Snapshot */

/** @param {string} name */
export function poolRoute(name) {
  return `#/pools/${encodeURIComponent(name)}`;
}

/** @param {string} name */
export function volumeRoute(name) {
  return `#/volumes/${encodeURIComponent(name)}`;
}

/** The states a volume can be in (domain/storage.py VolumeState), in the order the state filter lists them. */
export const VOLUME_STATES = [
  "creating",
  "ready",
  "attached",
  "attaching",
  "detaching",
  "resizing",
  "copying",
  "migrating",
  "snapshotting",
  "reverting",
  "deleting",
  "error",
];

/** The states in which a volume is at rest (no task drives it). */
const AT_REST = new Set(["ready", "attached", "error"]);

/**
 * The CSS tone of a volume state: at rest good, error bad, anything else busy.
 * @param {string | null | undefined} state
 */
export function volumeTone(state) {
  if (state === "ready" || state === "attached") return "good";
  if (state === "error") return "bad";
  return state ? "busy" : "idle";
}

/**
 * A volume's state as a badge.
 * @param {string | null | undefined} state
 */
export function stateBadge(state) {
  return badge(state, volumeTone(state));
}

/**
 * Whether a volume is in a transitional state (a task drives it: its page follows the task).
 * @param {{state: string}} volume
 */
export function busy(volume) {
  return !AT_REST.has(volume.state);
}

/**
 * @typedef {"attach" | "detach" | "grow" | "copy" | "migrate" | "delete" | "snapshot" | "snapshot-delete" | "revert"} VolumeAction
 */

/**
 * The actions a volume's state allows (domain/storage.py's transitions; the server checks
 * again): a ready volume may be attached, grown, copied, migrated, snapshotted, reverted or
 * deleted; an attached one detached, grown, copied, migrated, snapshotted or reverted (the
 * server refuses a snapshot's revert while its VM runs, and a delete until it is detached);
 * one in error only deleted; one in a transition nothing.
 * @param {{state: string}} volume
 * @returns {Set<VolumeAction>}
 */
export function volumeActions(volume) {
  switch (volume.state) {
    case "ready":
      return new Set(["attach", "grow", "copy", "migrate", "snapshot", "snapshot-delete", "revert", "delete"]);
    case "attached":
      return new Set(["detach", "grow", "copy", "migrate", "snapshot", "snapshot-delete", "revert"]);
    case "error":
      return new Set(["delete"]);
    default:
      return new Set();
  }
}

/** The size units of the forms, in MiB. */
export const UNITS = /** @type {Record<string, number>} */ ({ MiB: 1, GiB: 1024, TiB: 1024 * 1024 });

/**
 * A size typed in a form (a number and its unit) in whole MiB, as the API takes it;
 * undefined when the number is missing or not a number (the API then says what is wrong).
 * @param {string} text
 * @param {string} unit MiB, GiB or TiB
 * @returns {number | undefined}
 */
export function sizeMb(text, unit) {
  const trimmed = text.trim();
  if (trimmed === "") return undefined;
  const n = Number(trimmed);
  if (!Number.isFinite(n)) return undefined;
  return Math.round(n * (UNITS[unit] ?? 1));
}

/**
 * Where a pool keeps its files: its path, or each host's default directory.
 * @param {{path: string | null}} pool
 */
export function pathText(pool) {
  return pool.path ?? "each host's default directory";
}

/**
 * The nodes a pool is on: "every node" or their names.
 * @param {{nodes: string[] | null}} pool
 */
export function nodesText(pool) {
  if (pool.nodes === null || pool.nodes === undefined) return "every node";
  return pool.nodes.length === 0 ? "no node" : pool.nodes.join(", ");
}

/**
 * The nodes a volume of `pool` may be placed on, from every node's name.
 * @param {{nodes: string[] | null}} pool
 * @param {string[]} all
 */
export function poolNodes(pool, all) {
  return pool.nodes ?? all;
}

/**
 * How full a pool (or one host of it) is: the used fraction and its text, "12 GiB free of
 * 100 GiB"; null when no host has reported it yet.
 * @param {{capacity_mb: number | null, free_mb: number | null}} stats
 * @returns {{fraction: number, text: string} | null}
 */
export function fullness(stats) {
  if (stats.capacity_mb === null || stats.capacity_mb === undefined) return null;
  if (stats.free_mb === null || stats.free_mb === undefined) return null;
  const used = Math.max(stats.capacity_mb - stats.free_mb, 0);
  return { fraction: ratio(used, stats.capacity_mb), text: `${memory(stats.free_mb)} free of ${memory(stats.capacity_mb)}` };
}

/**
 * A pool's (or host's) fullness as a bar, or "not reported".
 * @param {{capacity_mb: number | null, free_mb: number | null}} stats
 */
export function fullnessBar(stats) {
  const full = fullness(stats);
  if (full === null) return h("span", { class: "muted" }, "not reported");
  return bar(full.fraction, full.text, `used: ${full.text}`);
}

/**
 * Whether a live event is about the pool `name` (or, with no name, about any pool): pool
 * events, and volume events (a volume's count and sizes are the pool's) of it.
 * @param {{kind: string, data?: Record<string, any> | null}} event
 * @param {string} [name]
 */
export function concernsPool(event, name) {
  if (!event.kind.startsWith("pool.") && !event.kind.startsWith("volume.")) return false;
  if (name === undefined) return true;
  return event.data?.pool === name || (event.kind.startsWith("pool.") && event.data?.pool === undefined);
}

/**
 * Whether a live event is about the volume `name` (or, with no name, about any volume):
 * its volume events, and events of the task that drives it.
 * @param {{kind: string, task_id?: string | null, data?: Record<string, any> | null}} event
 * @param {string} [name]
 * @param {string | null} [taskId] the task driving it now
 */
export function concernsVolume(event, name, taskId) {
  if (taskId && event.task_id === taskId) return true;
  if (!event.kind.startsWith("volume.")) return false;
  return name === undefined || event.data?.volume === name;
}

/**
 * Which VMs a volume can be attached to: those on its node (a local pool's volume is on one
 * host), or every VM (a shared pool's); a VM being deleted is left out.
 * @param {{name: string, node: string | null, status: string}[]} vms
 * @param {{pool_type: string, node: string | null}} volume
 */
export function attachable(vms, volume) {
  return vms.filter(
    (vm) => vm.status !== "DELETED" && (volume.pool_type !== "local" || (vm.node !== null && vm.node === volume.node)),
  );
}

/** @param {string} name */
export function deleteVolumeText(name) {
  return `Delete volume ${name}? Its file and every snapshot of it are removed from its pool; its data is destroyed. This cannot be undone.`;
}

/**
 * @param {string} name
 * @param {number} volumes how many volumes it holds (the server refuses while any)
 */
export function deletePoolText(name, volumes) {
  const held = volumes > 0 ? ` It still holds ${volumes} volume${volumes === 1 ? "" : "s"}: the server refuses until they are deleted or moved.` : "";
  return `Delete pool ${name}? Bollard forgets it; the files in its directory stay on the hosts.${held}`;
}

/**
 * @param {string} volume
 * @param {string} vm
 */
export function detachText(volume, vm) {
  return `Detach ${volume} from ${vm}? The guest loses the disk at once, as if it were pulled out: unmount it in the guest first.`;
}

/**
 * @param {string} volume
 * @param {string} snapshot
 */
export function revertText(volume, snapshot) {
  return `Revert ${volume} to snapshot ${snapshot}? Everything written to it since the snapshot was taken is lost.`;
}

/**
 * @param {string} volume
 * @param {string} snapshot
 */
export function deleteSnapshotText(volume, snapshot) {
  return `Delete snapshot ${snapshot} of ${volume}? The volume keeps its data; the snapshot cannot be reverted to any more.`;
}

/** @param {string | null | undefined} name */
function poolLink(name) {
  return name ? link(poolRoute(name), name) : "–";
}

/** @param {string | null | undefined} name */
function nodeLink(name) {
  return name ? link(nodeRoute(name), name) : "–";
}

/**
 * The VM a volume is attached to, with its device: "web1 (vdb)".
 * @param {{vm: string | null, device: string | null}} volume
 */
export function attachment(volume) {
  if (!volume.vm) return "–";
  return [link(vmRoute(volume.vm), volume.vm), volume.device ? ` (${volume.device})` : ""];
}

/**
 * What a pool's row shows, as text (the table adds links and the bar).
 * @param {Pool} p
 */
export function poolRow(p) {
  return {
    name: p.name,
    type: p.type,
    path: pathText(p),
    nodes: nodesText(p),
    volumes: String(p.volumes ?? 0),
    provisioned: memory(p.provisioned_mb),
    capacity: fullness(p),
  };
}

/**
 * The pools table: name, type, path, nodes, volumes, provisioned, capacity and free.
 * @param {Pool[]} pools
 */
export function poolTable(pools) {
  const rows = pools.map((p) => ({ pool: p, row: poolRow(p) }));
  return table(
    [
      { title: "Name", field: "name", cell: (r) => link(poolRoute(r.row.name), r.row.name) },
      { title: "Type", field: "type", cell: (r) => r.row.type },
      { title: "Path", field: "path", cell: (r) => (r.pool.path ? h("code", null, r.row.path) : h("span", { class: "muted" }, r.row.path)) },
      { title: "Nodes", field: "nodes", cell: (r) => r.row.nodes },
      { title: "Volumes", field: "volumes", cell: (r) => r.row.volumes },
      { title: "Provisioned", field: "provisioned", cell: (r) => r.row.provisioned },
      { title: "Capacity", field: "capacity", cell: (r) => fullnessBar(r.pool) },
    ],
    rows,
    (r) => ({ dataset: { testid: "pool-row", pool: r.row.name, type: r.row.type } }),
    "No pools yet.",
  );
}

/**
 * Each host's report of a pool: capacity, free room, when, and its error.
 * @param {PoolHost[]} hosts
 * @param {number} now
 */
export function hostTable(hosts, now) {
  return table(
    [
      { title: "Node", field: "node", cell: (s) => nodeLink(s.node) },
      { title: "Capacity", field: "capacity", cell: fullnessBar },
      { title: "Reported", field: "reported", cell: (s) => (s.reported_at ? h("span", { title: when(s.reported_at) }, ago(s.reported_at, now)) : "never") },
      { title: "Error", field: "error", cell: (s) => (s.error ? h("span", { class: "badge bad" }, s.error) : "") },
    ],
    hosts,
    (s) => ({ dataset: { testid: "pool-host-row", node: s.node } }),
    "No host has reported this pool yet.",
  );
}

/**
 * What a volume's row shows, as text (the table adds links and the badge).
 * @param {Volume} v
 */
export function volumeRow(v) {
  return {
    name: v.name,
    state: v.state,
    tone: volumeTone(v.state),
    pool: v.pool,
    node: v.node ?? "–",
    size: memory(v.size_mb),
    format: v.format,
    attached: v.vm ? `${v.vm}${v.device ? ` (${v.device})` : ""}` : "–",
    snapshots: String(v.snapshots ?? 0),
    task: v.task_id ?? "",
  };
}

/**
 * The volumes table; `pool: false` leaves the pool column out (a pool's own page).
 * @param {Volume[]} volumes
 * @param {{pool?: boolean, empty?: string}} [options]
 */
export function volumeTable(volumes, options = {}) {
  /** @typedef {{volume: Volume, row: ReturnType<typeof volumeRow>}} Row */
  const rows = volumes.map((v) => ({ volume: v, row: volumeRow(v) }));
  /** @type {import("../js/dom.js").Column<Row>[]} */
  const columns = [
    { title: "Name", field: "name", cell: (r) => link(volumeRoute(r.row.name), r.row.name) },
    { title: "State", field: "state", cell: (r) => badge(r.row.state, r.row.tone) },
    { title: "Pool", field: "pool", cell: (r) => poolLink(r.row.pool) },
    { title: "Node", field: "node", cell: (r) => nodeLink(r.volume.node) },
    { title: "Size", field: "size", cell: (r) => r.row.size },
    { title: "Format", field: "format", cell: (r) => r.row.format },
    { title: "Attached to", field: "vm", cell: (r) => attachment(r.volume) },
    { title: "Snapshots", field: "snapshots", cell: (r) => r.row.snapshots },
    { title: "Task", field: "task", cell: (r) => (r.row.task ? link(taskRoute(r.row.task), "task", { title: r.row.task }) : "") },
  ];
  return table(
    options.pool === false ? columns.filter((c) => c.field !== "pool") : columns,
    rows,
    (r) => ({ dataset: { testid: "volume-row", volume: r.row.name, state: r.row.state } }),
    options.empty ?? "No volumes.",
  );
}

/**
 * The snapshots of a volume, each with the buttons `actions` gives for it (none for a reader).
 * @param {Snapshot[]} snapshots
 * @param {(s: Snapshot) => (HTMLElement | null)[]} actions
 */
export function snapshotTable(snapshots, actions) {
  return table(
    [
      { title: "Name", field: "name", cell: (s) => s.name },
      { title: "Size then", field: "size", cell: (s) => memory(s.size_mb) },
      { title: "Taken", field: "created", cell: (s) => when(s.created_at) },
      { title: "", field: "actions", cell: actions },
    ],
    snapshots,
    (s) => ({ dataset: { testid: "snapshot-row", snapshot: s.name } }),
    "No snapshots.",
  );
}
