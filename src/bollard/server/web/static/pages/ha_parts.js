// @ts-check
/** What the HA pages share: HA groups' nodes typed as `node:priority,...` (parsed here, as
 * `bollard ha group create --nodes` takes them), the request bodies of groups and rules, the
 * delete confirmations, and the tables drawn from `GET /api/v1/ha/groups`, `/ha/rules` and a
 * VM's HA fields. Pure builders: no state, no requests. */
import { link, table } from "../js/dom.js";
import { badge } from "../js/ui.js";

/**
 * An HA group as `GET /api/v1/ha/groups` gives it.
 * @typedef {object} HaGroup
 * @property {string} name
 * @property {Record<string, number>} nodes node -> priority (higher first)
 * @property {boolean} restricted its VMs never run outside it
 * @property {boolean} nofailback its VMs are not moved back to a higher-priority node
 * @property {string} description
 * @property {number} vms how many VMs are in it
 */
/**
 * An affinity rule as `GET /api/v1/ha/rules` gives it.
 * @typedef {object} AffinityRule
 * @property {string} name
 * @property {"together" | "apart"} kind
 * @property {boolean} strict
 * @property {string[]} vms
 * @property {string} description
 */

export const HA_ROUTE = "#/ha";
export const HA_STATES = /** @type {const} */ (["started", "stopped", "disabled", "ignored"]);
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

/**
 * The nodes with their priorities, highest first: "node1:2, node2:1".
 * @param {Record<string, number> | null | undefined} nodes
 */
export function nodesLine(nodes) {
  return Object.entries(nodes ?? {})
    .sort(([a, pa], [b, pb]) => pb - pa || (a < b ? -1 : a > b ? 1 : 0))
    .map(([n, p]) => `${n}:${p}`)
    .join(", ");
}

/**
 * Read `node1:2,node2:1,node3` (a node without a priority has 0; commas, spaces or new lines
 * between them). Each part that is not one is named in `errors`.
 * @param {string} text
 * @returns {{nodes: Record<string, number>, errors: string[]}}
 */
export function parseNodes(text) {
  /** @type {Record<string, number>} */
  const nodes = {};
  /** @type {string[]} */
  const errors = [];
  for (const part of text.split(/[\s,]+/).filter(Boolean)) {
    const colon = part.indexOf(":");
    const name = colon < 0 ? part : part.slice(0, colon);
    const prio = colon < 0 ? "0" : part.slice(colon + 1);
    if (!NAME.test(name)) errors.push(`"${part}" names no node (node:priority)`);
    else if (!/^[+-]?\d+$/.test(prio)) errors.push(`the priority of ${name} is not a whole number`);
    else if (Math.abs(Number(prio)) > 1000) errors.push(`the priority of ${name} is not in -1000..1000`);
    else if (Object.hasOwn(nodes, name)) errors.push(`${name} is given twice`);
    else nodes[name] = Number(prio);
  }
  if (errors.length === 0 && Object.keys(nodes).length === 0) errors.push("give at least one node (node:priority,...)");
  return { nodes, errors };
}

/**
 * VM names, comma- or space-separated, each once.
 * @param {string} text
 */
export function parseNames(text) {
  return [...new Set(text.split(/[\s,]+/).filter(Boolean))];
}

/**
 * The PATCH body that turns `before` into the values of a form (`after`); {} when nothing
 * changed. Nodes and VMs are compared as sets (their order says nothing).
 * @param {Record<string, any>} before
 * @param {Record<string, any>} after
 */
export function changes(before, after) {
  /** @type {Record<string, any>} */
  const body = {};
  for (const [key, value] of Object.entries(after)) {
    if (JSON.stringify(normal(value)) !== JSON.stringify(normal(before[key]))) body[key] = value;
  }
  return body;
}

/** @param {any} value */
function normal(value) {
  if (Array.isArray(value)) return [...value].sort();
  if (value && typeof value === "object") return Object.fromEntries(Object.entries(value).sort(([a], [b]) => (a < b ? -1 : 1)));
  return value ?? "";
}

/**
 * The confirmation before deleting a group.
 * @param {HaGroup} g
 */
export function deleteGroupText(g) {
  const use =
    g.vms > 0
      ? ` ${g.vms} VM${g.vms === 1 ? " is" : "s are"} in it: the server refuses while any is (take them out on their VM page).`
      : "";
  return `Delete HA group ${g.name}? VMs no longer prefer its nodes.${use}`;
}

/** @param {AffinityRule} r */
export function deleteRuleText(r) {
  return `Delete affinity rule ${r.name}? Its VMs (${r.vms.join(", ")}) stay where they are; later placements no longer keep them ${r.kind}.`;
}

/** @param {AffinityRule} r */
export function ruleLine(r) {
  return `${r.strict ? "strict" : "non-strict"} ${r.kind}: ${r.vms.join(", ")}`;
}

/**
 * Whether a live event concerns the HA page (a group or rule changed; any VM event changes
 * the VMs' HA states and the groups' counts).
 * @param {{kind: string, vm?: string | null}} e
 */
export function concernsHa(e) {
  return e.kind.startsWith("ha.") || Boolean(e.vm);
}

/**
 * The tone of an HA request state's badge.
 * @param {string | null | undefined} state
 */
export function haTone(state) {
  return { started: "good", stopped: "idle", disabled: "idle", ignored: "warn", error: "bad" }[state ?? ""] ?? "idle";
}

/**
 * "1/2" (a count against its limit; the setting's when the VM has none of its own).
 * @param {number | null | undefined} done
 * @param {number | null | undefined} own
 * @param {number | null | undefined} setting
 */
export function countOf(done, own, setting) {
  const limit = own ?? setting;
  return `${done ?? 0}/${limit ?? "?"}`;
}

/**
 * The HA groups table: name, nodes by priority, restricted, failback, VMs, description, and
 * a last column of `actions(group)` when given.
 * @param {HaGroup[]} groups
 * @param {((g: HaGroup) => import("../js/dom.js").Child[]) | null} [actions]
 */
export function groupTable(groups, actions = null) {
  /** @type {import("../js/dom.js").Column<HaGroup>[]} */
  const columns = [
    { title: "Name", field: "name", cell: (g) => g.name },
    { title: "Nodes (priority)", field: "nodes", cell: (g) => nodesLine(g.nodes) },
    { title: "Restricted", field: "restricted", cell: (g) => (g.restricted ? "yes" : "no") },
    { title: "Failback", field: "failback", cell: (g) => (g.nofailback ? "no" : "yes") },
    { title: "VMs", field: "vms", cell: (g) => String(g.vms) },
    { title: "Description", field: "description", cell: (g) => g.description },
  ];
  if (actions) columns.push({ title: "Actions", field: "actions", cell: actions });
  return table(columns, groups, (g) => ({ dataset: { testid: "ha-group-row", group: g.name } }), "No HA groups yet.");
}

/**
 * The affinity rules table.
 * @param {AffinityRule[]} rules
 * @param {((r: AffinityRule) => import("../js/dom.js").Child[]) | null} [actions]
 */
export function ruleTable(rules, actions = null) {
  /** @type {import("../js/dom.js").Column<AffinityRule>[]} */
  const columns = [
    { title: "Name", field: "name", cell: (r) => r.name },
    { title: "Kind", field: "kind", cell: (r) => r.kind },
    { title: "Strict", field: "strict", cell: (r) => (r.strict ? "yes" : "no") },
    { title: "VMs", field: "vms", cell: (r) => r.vms.map((v, i) => [i ? ", " : "", link(`#/vms/${encodeURIComponent(v)}`, v)]) },
    { title: "Description", field: "description", cell: (r) => r.description },
  ];
  if (actions) columns.push({ title: "Actions", field: "actions", cell: actions });
  return table(columns, rules, (r) => ({ dataset: { testid: "ha-rule-row", rule: r.name } }), "No affinity rules yet.");
}

/**
 * Every VM's HA fields (`bollard ha status`): request state, group, node, restarts and
 * relocations against their limits.
 * @param {any[]} vms
 * @param {{max_restart?: number | null, max_relocate?: number | null}} settings
 */
export function statusTable(vms, settings) {
  /** @type {import("../js/dom.js").Column<any>[]} */
  const columns = [
    { title: "VM", field: "name", cell: (v) => link(`#/vms/${encodeURIComponent(v.name)}`, v.name) },
    { title: "HA state", field: "ha_state", cell: (v) => badge(v.ha_state, haTone(v.ha_state)) },
    { title: "Group", field: "ha_group", cell: (v) => v.ha_group ?? "–" },
    { title: "Node", field: "node", cell: (v) => v.node ?? "–" },
    { title: "Status", field: "status", cell: (v) => v.status },
    { title: "Restarts", field: "restarts", cell: (v) => countOf(v.ha_restarts, v.max_restart, settings.max_restart) },
    { title: "Relocations", field: "relocates", cell: (v) => countOf(v.ha_relocates, v.max_relocate, settings.max_relocate) },
  ];
  return table(columns, vms, (v) => ({ dataset: { testid: "ha-vm-row", vm: v.name } }), "No VMs.");
}

/**
 * A VM's HA fields as facts' pairs (for the VM page).
 * @param {any} vm
 * @returns {[string, import("../js/dom.js").Child | import("../js/dom.js").Child[], string][]}
 */
export function haPairs(vm) {
  const limit = (/** @type {number | null | undefined} */ own) => (own === null || own === undefined ? "the setting's" : String(own));
  return [
    ["HA state", badge(vm.ha_state, haTone(vm.ha_state)), "ha_state"],
    ["HA group", vm.ha_group ? link(HA_ROUTE, vm.ha_group) : "none", "ha_group"],
    ["Restarts", `${vm.ha_restarts ?? 0} (limit ${limit(vm.max_restart)})`, "ha_restarts"],
    ["Relocations", `${vm.ha_relocates ?? 0} (limit ${limit(vm.max_relocate)})`, "ha_relocates"],
  ];
}
