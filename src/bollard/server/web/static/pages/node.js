// @ts-check
/** Node (`#/nodes/NAME`): its cell (through an API server), its state and resources,
 * heartbeats, power driver (never a secret: only whether credentials are stored), its
 * allocations (the VMs it owns and the resize holds it keeps), its VMs and recent events,
 * and the actions
 * flush, unflush, confirm-down and power status/on/off/cycle; maintenance on/off and its
 * shutdown policy (ha_node.js); its SR-IOV PFs and VFs, and a VF's settings (node_sriov.js).
 * Live: refreshed on events of the node or of any VM, and every 5 s. */
import { pathOf } from "../js/api.js";
import { facts, h, replace } from "../js/dom.js";
import { ago, duration, memory, tone, when } from "../js/format.js";
import { badge } from "../js/ui.js";
import { cellFact } from "./cell_parts.js";
import { nodeActions, powerActions } from "./node_actions.js";
import { nodeHaSection } from "./ha_node.js";
import { loadSriov, nodeSriovSection } from "./node_sriov.js";
import { eventTable, vmTable } from "./node_lists.js";
import { allocationSummary, allocationTable } from "./resize_parts.js";
import {
  connectedBadge,
  keepFresh,
  loadText,
  memoryBar,
  provisionedBar,
  provisionedMemory,
  stillShown,
  swap,
  vcpuBar,
} from "./nodes_table.js";

const EVENTS = 50;

/**
 * @typedef {import("./nodes_table.js").Node} Node
 * @typedef {import("./nodes_table.js").Vm} Vm
 * @typedef {import("../js/live.js").BollardEvent} BollardEvent
 */

/**
 * @param {import("../js/ui.js").Ctx} ctx
 * @param {{name: string}} params
 */
export async function render(ctx, params) {
  const hash = window.location.hash;
  /** refresh the page now (after an action): keepFresh's, once the page is shown */
  let refreshNow = () => Promise.resolve();
  const name = params.name;
  const title = h("h1", null, `Node ${name}`);
  const headBadges = h("span", { class: "node-badges" });
  const actions = h("div", { class: "toolbar", "data-testid": "node-actions" });
  const result = h("p", { class: "muted", "data-testid": "action-result", "aria-live": "polite" });
  const stateBox = h("section", { "data-testid": "node-state", "aria-labelledby": "node-state-h" });
  const resourceBox = h("section", { "data-testid": "node-resources", "aria-labelledby": "node-res-h" });
  const heartbeatBox = h("section", { "data-testid": "node-heartbeat", "aria-labelledby": "node-hb-h" });
  const powerFacts = h("div");
  const powerButtons = h("div", { class: "toolbar" });
  const powerAnswer = h("p", { "data-testid": "power-answer", "aria-live": "polite" });
  const powerBox = h(
    "section",
    { "data-testid": "node-power", "aria-labelledby": "node-power-h" },
    h("h2", { id: "node-power-h" }, "Power driver"),
    powerFacts,
    powerButtons,
    powerAnswer,
  );
  const allocSummary = h("p", { class: "muted", "data-testid": "node-allocation-summary" });
  const allocBox = h("div", { "data-testid": "node-allocations" });
  const vmsTitle = h("h2", null, "VMs");
  const vmsBox = h("div", { "data-testid": "node-vms" });
  const eventsBox = h("div", { "data-testid": "node-events" });
  let actionKey = "";
  const refresh = () => refreshNow();
  const ha = nodeHaSection(ctx, name, result, refresh);
  const sriov = nodeSriovSection(ctx, name, result, refresh);

  async function load() {
    const [node, vms, events, vfs] = await Promise.all([
      /** @type {Promise<Node>} */ (ctx.api.get(pathOf("nodes", name))),
      /** @type {Promise<Vm[]>} */ (ctx.api.all("/vms")),
      ctx.api.get("/events", { node: name, limit: EVENTS }),
      loadSriov(ctx, name),
    ]);
    const mine = vms.filter((vm) => vm.node === name);
    const provisioned = provisionedMemory(mine).get(name) ?? 0;
    const now = Date.now();

    replace(headBadges, badge(node.health, tone(node.health)), " ", badge(node.scheduling, tone(node.scheduling)));
    headBadges.dataset.health = node.health;
    headBadges.dataset.scheduling = node.scheduling;
    // The buttons are rebuilt only when what they depend on changes, so a refresh does not
    // take the focus or a click in progress away.
    const key = [node.health, node.scheduling, node.power.driver].join("|");
    if (key !== actionKey) {
      actionKey = key;
      replace(actions, nodeActions(ctx, node, result, refresh));
      replace(powerButtons, powerActions(ctx, node, powerAnswer, refresh));
    }
    actions.hidden = actions.childElementCount === 0;
    ha.update(node);
    sriov.update(vfs);

    swap(stateBox, h("h2", { id: "node-state-h" }, "State"), stateFacts(node, now));
    swap(
      resourceBox,
      h("h2", { id: "node-res-h" }, "Resources"),
      facts([
        ["vCPU allocated", [vcpuBar(node), h("span", { class: "muted" }, `${node.free.vcpus} free`)], "vcpus"],
        ["Memory allocated", [memoryBar(node), h("span", { class: "muted" }, `${memory(node.free.memory_mb)} free`)], "memory"],
        ["Memory provisioned", [provisionedBar(node, provisioned), h("span", { class: "muted" }, "all VMs on it, running or not")], "provisioned"],
        ["VMs", String(node.vm_count), "vm-count"],
      ]),
    );
    swap(heartbeatBox, h("h2", { id: "node-hb-h" }, "Heartbeats"), heartbeatFacts(node, now));
    swap(
      powerFacts,
      facts([
        ["Driver", node.power.driver ?? "none", "power-driver"],
        ["Address", node.power.address ?? "–", "power-address"],
        ["Credentials", node.power.credentials ? "stored" : "none", "power-credentials"],
      ]),
      node.power.driver
        ? null
        : h("p", { class: "muted" }, "Without a power driver this node cannot be fenced: set one with ", h("code", null, `bollard node set ${name} --power-driver …`), "."),
    );
    /** @type {import("./resize_parts.js").Allocation[] | undefined} */
    const allocations = node.allocations;
    allocSummary.textContent = allocations ? allocationSummary(allocations) : "This server does not report allocations.";
    swap(allocBox, allocations ? allocationTable(allocations, name) : null);
    vmsTitle.textContent = `VMs on ${name} (${mine.length})`;
    swap(vmsBox, vmTable(mine, name));
    /** @type {BollardEvent[]} */
    const items = events.items;
    swap(eventsBox, eventTable([...items].reverse(), name));
  }

  await load();
  if (!stillShown(hash)) return;
  replace(
    ctx.view,
    h("div", { class: "node-head" }, title, headBadges),
    actions,
    result,
    h("div", { class: "columns" }, stateBox, resourceBox),
    h("div", { class: "columns" }, heartbeatBox, powerBox),
    ha.root,
    sriov.root,
    h("section", { "aria-labelledby": "node-alloc-h" },
      h("h2", { id: "node-alloc-h" }, "Allocations"),
      h("p", { class: "muted" }, "What takes its vCPUs and memory: the VMs it owns, and what it keeps as the source of a resize until it is confirmed or reverted (a resize hold)."),
      allocSummary,
      allocBox,
    ),
    vmsTitle,
    vmsBox,
    h("h2", null, `Recent events of ${name}`),
    eventsBox,
  );
  // Any VM event: a VM may have arrived on this node or left it.
  refreshNow = keepFresh(ctx, load, (e) => e.node === name || Boolean(e.vm), 5000);
}

/**
 * @param {Node} node
 * @param {number} now
 */
function stateFacts(node, now) {
  return facts([
    ...cellFact(node),
    ["Health", [badge(node.health, tone(node.health)), node.health_since ? h("span", { class: "muted" }, ` since ${when(node.health_since)} (${ago(node.health_since, now)})`) : null], "health"],
    ["Scheduling", badge(node.scheduling, tone(node.scheduling)), "scheduling"],
    ["Connected", connectedBadge(node.connected), "connected"],
    ["Inventory", node.inventory_known ? "current (full report received)" : "not current (no full report in this session)", "inventory"],
    ["Agent incarnation", h("code", null, node.agent_incarnation ?? "–"), "incarnation"],
    ["Boot id", h("code", null, node.boot_id ?? "–"), "boot-id"],
    ["Hypervisor driver", node.driver ?? "–", "driver"],
    ["Load", [loadText(node.load), h("span", { class: "muted" }, " runnable per CPU")], "load"],
    ["Enrolled", when(node.created_at), "created"],
  ]);
}

/**
 * The last heartbeat stored: when, its sequence number, and the host's clock at it.
 * @param {Node} node
 * @param {number} now
 */
function heartbeatFacts(node, now) {
  const at = node.last_heartbeat;
  /** @type {import("../js/dom.js").Child[]} */
  let host = ["–"];
  if (node.report_host_time !== null && node.report_host_time !== undefined) {
    const hostIso = new Date(node.report_host_time * 1000).toISOString();
    host = [when(hostIso)];
    if (at) {
      const skew = node.report_host_time - Date.parse(at) / 1000;
      const side = skew < 0 ? "behind" : "ahead of";
      host.push(h("span", { class: Math.abs(skew) >= 5 ? "field-error" : "muted" }, ` (${duration(Math.abs(skew))} ${side} the server's receipt)`));
    }
  }
  return facts([
    ["Last heartbeat", at ? [when(at), h("span", { class: "muted" }, ` (${ago(at, now)})`)] : "never", "last-heartbeat"],
    ["Sequence", String(node.last_seq), "seq"],
    ["Host clock at it", host, "host-time"],
  ]);
}
