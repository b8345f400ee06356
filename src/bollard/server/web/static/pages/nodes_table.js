// @ts-check
/** The node table of the overview and the nodes page, the data it is drawn from, and the
 * live refresh both pages share. */
import { h, replace, table } from "../js/dom.js";
import { ago, memory, ratio, tone, trim, when } from "../js/format.js";
import { badge, bar, debounce, messageOf, showError } from "../js/ui.js";
import { nameCell, tolerant, withCellColumn } from "./cell_parts.js";

/** @typedef {{vcpus: number, memory_mb: number}} Resources */
/** @typedef {{driver: string | null, address: string | null, credentials: boolean}} Power */
/**
 * A node as `GET /api/v1/nodes` gives it.
 * @typedef {object} Node
 * @property {string} name
 * @property {string} health
 * @property {boolean} connected
 * @property {string} scheduling
 * @property {Resources} capacity
 * @property {Resources} allocated
 * @property {Resources} free
 * @property {number} vm_count
 * @property {string | null} last_heartbeat
 * @property {number} last_seq
 * @property {number | null} report_host_time
 * @property {boolean} inventory_known
 * @property {string | null} agent_incarnation
 * @property {string | null} boot_id
 * @property {string | null} driver
 * @property {number | null} load
 * @property {string | null} health_since
 * @property {Power} power
 * @property {string} created_at
 * @property {{consumer: "vm" | "migration", vm: string, migration_id: string | null, vcpus: number, memory_mb: number}[]} [allocations]
 * @property {string} [cell] its cell (through an API server)
 * @property {boolean} [unreachable] a node of a cell that did not answer: only name, cell, health
 */
/**
 * The part of a VM (`GET /api/v1/vms` items) these pages use.
 * @typedef {{name: string, node: string | null, status: string, vcpus: number, memory_mb: number, ha: string, desired_power: string, observed_power: string | null, task_state: string | null, task_id: string | null}} Vm
 */
/** @typedef {{nodes: Node[], vms: Vm[], provisioned: Map<string, number>}} NodeData */

/**
 * Memory provisioned on each node: the sum of the memory of every VM placed on it, running
 * or not (what the node would need if all of them started).
 * @param {Vm[]} vms
 * @returns {Map<string, number>} node name -> MiB
 */
export function provisionedMemory(vms) {
  /** @type {Map<string, number>} */
  const out = new Map();
  for (const vm of vms) {
    if (!vm.node) continue;
    out.set(vm.node, (out.get(vm.node) ?? 0) + (vm.memory_mb ?? 0));
  }
  return out;
}

/**
 * Every node and every VM, read together.
 * @param {import("../js/api.js").Api} api
 * @returns {Promise<NodeData>}
 */
export async function loadNodes(api) {
  const [nodes, vms] = await Promise.all([api.all("/nodes"), api.all("/vms")]);
  return { nodes, vms, provisioned: provisionedMemory(vms) };
}

/**
 * "2 / 16 vCPU" as a bar.
 * @param {Node} n
 */
export function vcpuBar(n) {
  const text = `${n.allocated.vcpus} / ${n.capacity.vcpus} vCPU`;
  return bar(ratio(n.allocated.vcpus, n.capacity.vcpus), text, `vCPUs allocated: ${text}`);
}

/**
 * "1 GiB / 32 GiB" as a bar.
 * @param {Node} n
 */
export function memoryBar(n) {
  const text = `${memory(n.allocated.memory_mb)} / ${memory(n.capacity.memory_mb)}`;
  return bar(ratio(n.allocated.memory_mb, n.capacity.memory_mb), text, `memory allocated: ${text}`);
}

/**
 * The memory of every VM on the node, running or not, against its capacity.
 * @param {Node} n
 * @param {number} provisioned MiB
 */
export function provisionedBar(n, provisioned) {
  const text = `${memory(provisioned)} / ${memory(n.capacity.memory_mb)}`;
  return bar(ratio(provisioned, n.capacity.memory_mb), text, `memory provisioned (all VMs on it): ${text}`);
}

/** @param {boolean} connected */
export function connectedBadge(connected) {
  return badge(connected ? "yes" : "no", connected ? "good" : "bad");
}

/**
 * A host's load (runnable work per CPU) as "0.13".
 * @param {number | null | undefined} load
 */
export function loadText(load) {
  return load === null || load === undefined ? "–" : trim(Math.round(load * 100) / 100);
}

/**
 * The node table: `extra` adds driver, load and power driver columns (the nodes page).
 * Through an API server: a Cell column, and the nodes of a cell that did not answer with
 * their health ("unknown"), "–" elsewhere and no link.
 * @param {Node[]} nodes
 * @param {Map<string, number>} provisioned
 * @param {{extra?: boolean, empty?: string}} [options]
 */
export function nodeTable(nodes, provisioned, options = {}) {
  const now = Date.now();
  /** @type {import("../js/dom.js").Column<Node>[]} */
  const columns = [
    { title: "Name", field: "name", cell: (n) => nameCell(n, `#/nodes/${encodeURIComponent(n.name)}`) },
    { title: "Health", field: "health", cell: (n) => badge(n.health, tone(n.health)) },
    { title: "Scheduling", field: "scheduling", cell: (n) => badge(n.scheduling, tone(n.scheduling)) },
    { title: "Connected", field: "connected", cell: (n) => connectedBadge(n.connected) },
    { title: "vCPU allocated", field: "vcpus", cell: vcpuBar },
    { title: "Memory allocated", field: "memory", cell: memoryBar },
    { title: "Memory provisioned", field: "provisioned", cell: (n) => provisionedBar(n, provisioned.get(n.name) ?? 0) },
    { title: "VMs", field: "vms", cell: (n) => n.vm_count },
  ];
  if (options.extra) {
    columns.push(
      { title: "Driver", field: "driver", cell: (n) => n.driver ?? "–" },
      { title: "Load", field: "load", cell: (n) => loadText(n.load) },
      { title: "Power driver", field: "power", cell: (n) => powerText(n.power) },
    );
  }
  columns.push({
    title: "Last heartbeat",
    field: "heartbeat",
    cell: (n) => h("span", { title: when(n.last_heartbeat) }, ago(n.last_heartbeat, now)),
  });
  return table(
    tolerant(withCellColumn(columns, nodes), ["name", "health", "cell"]),
    nodes,
    (n) => ({ dataset: { testid: "node-row", node: n.name, health: n.health } }),
    options.empty ?? "No nodes yet: enrol one with `bollard node add NAME`.",
  );
}

/**
 * "ipmi at 10.0.0.5" or "none".
 * @param {Power} power
 */
export function powerText(power) {
  if (!power.driver) return "none";
  return power.address ? `${power.driver} at ${power.address}` : power.driver;
}

/**
 * Keep a page current: `load` runs now, then again (debounced 300 ms) on every event that
 * `concerns` says is about what the page shows, on every (re)connection of the event stream,
 * and every `everyMs`. A failed refresh shows its one line in the error bar, and clears it
 * when a later refresh works (unless something else has replaced the line meanwhile).
 * Refreshes never overlap: an event during one asks for one more after it.
 * @param {import("../js/ui.js").Ctx} ctx
 * @param {() => Promise<void>} load
 * @param {(e: import("../js/live.js").BollardEvent) => boolean} concerns
 * @param {number} everyMs
 * @returns {() => Promise<void>} refresh now (after an action)
 */
export function keepFresh(ctx, load, concerns, everyMs) {
  let running = false;
  let again = false;
  /** @type {string | null} */
  let shown = null;
  const errorBar = /** @type {HTMLElement} */ (document.getElementById("error"));
  const hash = window.location.hash;
  async function refresh() {
    if (!stillShown(hash)) return; // a debounced call after the page was left
    if (running) {
      again = true; // one more after this one: it may have read before the change
      return;
    }
    running = true;
    try {
      await load();
      if (shown !== null && errorBar.textContent === shown) showError(null);
      shown = null;
    } catch (err) {
      if (stillShown(hash)) {
        shown = messageOf(err);
        showError(shown);
      }
    } finally {
      running = false;
    }
    if (again) {
      again = false;
      void refresh();
    }
  }
  const soon = debounce(() => void refresh(), 300);
  ctx.onEvent((e) => {
    if (e.kind === "stream.connected" || concerns(e)) soon();
  });
  ctx.every(() => void refresh(), everyMs);
  return refresh;
}

/**
 * Whether the page that started drawing at `hash` is still the one shown (a slow first load
 * must not draw over the page the user has gone to meanwhile).
 * @param {string} hash
 */
export function stillShown(hash) {
  return window.location.hash === hash;
}

/**
 * Replace a container's children, keeping the keyboard focus where it was: when the focus
 * is inside the container, the element at the same place in the new content (same path of
 * child positions and same tag) gets it back, so a refresh every few seconds does not throw
 * a keyboard user out of a table.
 * @param {HTMLElement} container
 * @param {...(import("../js/dom.js").Child | import("../js/dom.js").Child[])} children
 */
export function swap(container, ...children) {
  const active = document.activeElement;
  /** @type {number[] | null} */
  let path = null;
  if (active instanceof HTMLElement && active !== container && container.contains(active)) {
    path = [];
    for (let el = /** @type {Element} */ (active); el !== container; el = /** @type {Element} */ (el.parentElement)) {
      path.unshift(Array.prototype.indexOf.call(/** @type {Element} */ (el.parentElement).children, el));
    }
  }
  replace(container, ...children);
  if (path === null || !(active instanceof HTMLElement)) return;
  /** @type {Element | undefined} */
  let el = container;
  for (const i of path) {
    el = el?.children[i];
  }
  if (el instanceof HTMLElement && el.tagName === active.tagName) el.focus({ preventScroll: true });
}
