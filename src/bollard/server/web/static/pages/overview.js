// @ts-check
/** Overview (`#/`): the cluster at a glance: VMs by status, nodes connected, tasks running,
 * maintenance mode (with its switch), fencing, the management servers (role and agents of
 * each), the cells and their state (an API server's status: mode "cells"), and the node table
 * with capacity bars.
 * Live: refreshed on node, VM, task and cluster events, and every 5 s (heartbeat ages). */
import { h, link, replace } from "../js/dom.js";
import { tone } from "../js/format.js";
import { actionButton, badge, confirmDialog } from "../js/ui.js";
import { CELLS_ROUTE, cellsCard, modeOf } from "./cell_parts.js";
import { keepFresh, loadNodes, nodeTable, stillShown, swap } from "./nodes_table.js";
import { loadServers, serversCard } from "./server_parts.js";

/** Node health states that mean fencing is (or was) at work. */
const FENCING_STATES = new Set(["dead", "fencing", "fenced", "fence_failed"]);

/** The order VM statuses are listed in (others follow, by name). */
const STATUS_ORDER = ["ACTIVE", "BUILD", "MIGRATING", "REBOOT", "RESIZE", "VERIFY_RESIZE", "SHUTOFF", "ERROR", "UNKNOWN"];

/**
 * @typedef {object} Status `GET /api/v1/status`
 * @property {{total: number, connected: number}} nodes
 * @property {{total: number, by_status: Record<string, number>}} vms
 * @property {number} tasks_running
 * @property {boolean | null} maintenance
 * @property {string} [mode] "single" or "cells" (an API server); none: an older server
 * @property {{name: string, state: string, error: string | null}[] | null} [cells]
 * @property {{total: number, up: number, leader: string | null} | null} [servers] none: an
 *   older server, or an API server (cells)
 */

/**
 * @param {import("../js/ui.js").Ctx} ctx
 */
export async function render(ctx) {
  const hash = window.location.hash;
  /** refresh the page now (after an action): keepFresh's, once the page is shown */
  let refreshNow = () => Promise.resolve();
  /** the last state read, for the maintenance switch's confirmation */
  const state = { maintenance: false, /** @type {string[]} */ dead: [] };

  const vmsBody = h("div");
  const nodesBody = h("div");
  const tasksBody = h("div");
  const maintenanceBody = h("div");
  const fencingBody = h("div");
  const cellsBody = h("div");
  const cellsCardEl = card("Cells", "card-cells", cellsBody, link(CELLS_ROUTE, "All cells"));
  cellsCardEl.hidden = true;
  const serversBody = h("div");
  const serversCardEl = card("Servers", "card-servers", serversBody, null);
  serversCardEl.hidden = true;
  const switchButton = actionButton(ctx, "cluster.maintenance", "cluster-maintenance", "Turn maintenance on", async () => {
    const on = !state.maintenance;
    const ok = await confirmDialog(
      on ? "Turn maintenance mode on?" : "Turn maintenance mode off?",
      on ? maintenanceOnText() : maintenanceOffText(state.dead),
      on ? "Turn on" : "Turn off",
    );
    if (!ok) return;
    await ctx.api.put("/cluster/maintenance", { maintenance: on });
    await refreshNow();
  });
  const cards = h(
    "div",
    { class: "cards overview-cards", "data-testid": "overview-cards" },
    card("VMs", "card-vms", vmsBody, link("#/vms", "All VMs")),
    card("Nodes", "card-nodes", nodesBody, link("#/nodes", "All nodes")),
    card("Tasks running", "card-tasks", tasksBody, link("#/tasks", "All tasks")),
    card("Maintenance", "card-maintenance", maintenanceBody, switchButton),
    card("Fencing", "card-fencing", fencingBody, null),
    serversCardEl,
    cellsCardEl,
  );
  const nodeBox = h("div", { "data-testid": "overview-nodes" });

  async function load() {
    const [status, data, fencing] = await Promise.all([
      /** @type {Promise<Status>} */ (ctx.api.get("/status")),
      loadNodes(ctx.api),
      fencingEnabled(ctx.api),
    ]);
    // (an API server in front of cells has no server list: it says no `servers`)
    const servers = status.servers ? await loadServers(ctx.api) : null;
    const maintenance = Boolean(status.maintenance);
    state.maintenance = maintenance;
    state.dead = data.nodes.filter((n) => n.health === "dead" || n.health === "fence_failed").map((n) => n.name);
    if (switchButton) switchButton.textContent = maintenance ? "Turn maintenance off" : "Turn maintenance on";

    swap(vmsBody, vmCounts(status.vms));
    const byHealth = countBy(data.nodes.map((n) => n.health));
    swap(
      nodesBody,
      h("div", { class: "big", "data-field": "nodes-connected" }, `${status.nodes.connected} / ${status.nodes.total}`),
      h("p", { class: "muted" }, "connected"),
      h("ul", { class: "overview-counts" }, [...byHealth].map(([health, n]) => h("li", { dataset: { health } }, badge(health, tone(health)), ` ${n}`))),
    );
    swap(tasksBody, h("div", { class: "big", "data-field": "tasks-running" }, status.tasks_running));
    swap(
      maintenanceBody,
      h("div", { class: "big", "data-field": "maintenance", dataset: { state: maintenance ? "on" : "off" } }, badge(maintenance ? "on" : "off", maintenance ? "warn" : "good")),
      h("p", { class: "muted" }, maintenance ? "Fencing and recovery are suspended." : "Fencing and recovery work as usual."),
    );
    const fencingNodes = data.nodes.filter((n) => FENCING_STATES.has(n.health));
    swap(
      fencingBody,
      h(
        "div",
        { class: "big", "data-field": "fencing", dataset: { state: fencing === null ? "unknown" : fencing ? "enabled" : "disabled" } },
        badge(fencing === null ? "unknown" : fencing ? "enabled" : "disabled", fencing ? "good" : "warn"),
      ),
      maintenance && fencing ? h("p", { class: "muted" }, "Suspended while maintenance is on.") : null,
      fencingNodes.length === 0
        ? h("p", { class: "muted", "data-field": "fencing-nodes" }, "No node is dead or being fenced.")
        : h(
            "ul",
            { class: "overview-counts", "data-field": "fencing-nodes" },
            fencingNodes.map((n) => h("li", { dataset: { node: n.name } }, link(`#/nodes/${encodeURIComponent(n.name)}`, n.name), " ", badge(n.health, tone(n.health)))),
          ),
    );
    swap(nodeBox, nodeTable(data.nodes, data.provisioned));
    serversCardEl.hidden = servers === null;
    if (servers !== null) swap(serversBody, serversCard(servers));
    cellsCardEl.hidden = modeOf(status) !== "cells";
    if (!cellsCardEl.hidden) swap(cellsBody, cellsCard(status.cells ?? []));
  }

  await load();
  if (!stillShown(hash)) return;
  replace(ctx.view, h("h1", null, "Overview"), cards, h("h2", null, "Nodes"), nodeBox);
  refreshNow = keepFresh(
    ctx,
    load,
    (e) => Boolean(e.node || e.vm || e.task_id || e.kind.startsWith("cluster.")),
    5000,
  );
}

/**
 * @param {string} title
 * @param {string} testid
 * @param {HTMLElement} body
 * @param {HTMLElement | null} footer
 */
function card(title, testid, body, footer) {
  return h("section", { class: "card", "data-testid": testid, "aria-label": title }, h("h3", null, title), body, footer);
}

/**
 * The VM total and a line per status: `<li data-status="ACTIVE">`.
 * @param {Status["vms"]} vms
 */
function vmCounts(vms) {
  const statuses = Object.entries(vms.by_status ?? {}).filter(([, n]) => n > 0);
  statuses.sort(([a], [b]) => rank(a) - rank(b) || a.localeCompare(b));
  return [
    h("div", { class: "big", "data-field": "vms-total" }, vms.total),
    statuses.length === 0
      ? h("p", { class: "muted" }, "No VMs yet.")
      : h("ul", { class: "overview-counts" }, statuses.map(([status, n]) => h("li", { dataset: { status } }, badge(status, tone(status)), ` ${n}`))),
  ];
}

/** @param {string} status */
function rank(status) {
  const i = STATUS_ORDER.indexOf(status);
  return i < 0 ? STATUS_ORDER.length : i;
}

/**
 * @param {string[]} values
 * @returns {Map<string, number>}
 */
function countBy(values) {
  /** @type {Map<string, number>} */
  const out = new Map();
  for (const v of [...values].sort()) out.set(v, (out.get(v) ?? 0) + 1);
  return out;
}

/**
 * The `fencing.enabled` setting, or null when it cannot be read.
 * @param {import("../js/api.js").Api} api
 * @returns {Promise<boolean | null>}
 */
async function fencingEnabled(api) {
  try {
    const setting = await api.get("/settings/fencing.enabled");
    return Boolean(setting.value);
  } catch (err) {
    console.warn("fencing.enabled could not be read", err);
    return null;
  }
}

function maintenanceOnText() {
  return (
    "While maintenance mode is on, Bollard neither fences nodes nor restarts their VMs " +
    "elsewhere: a node that fails still goes suspect and dead, but it is not powered off and " +
    "its HA VMs stay down until maintenance is turned off. Use it while you work on hosts, " +
    "their power or the network."
  );
}

/** @param {string[]} dead */
function maintenanceOffText(dead) {
  const now = dead.length > 0 ? ` Dead now: ${dead.join(", ")}.` : "";
  return (
    "Fencing and recovery resume at once: a dead node is fenced (powered off through its " +
    `power driver) and its HA VMs are restarted elsewhere.${now}`
  );
}
