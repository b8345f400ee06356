// @ts-check
/** A VM's placement and recovery settings ("meta": migration method, node limit, selector,
 * HA, HA priority, on_lost): the controls shared by the create form and the VM page's edit
 * form, and their facts. Field names are the API's (VmMetaFields in api/schemas.py). */
import { facts, h } from "../js/dom.js";
import { errorSlot, labelled, select } from "./vm_common.js";

const METHODS = /** @type {[string, string][]} */ ([
  ["default", "default (live, else by shutdown)"],
  ["live", "live (never by shutdown)"],
  ["shutdown", "shutdown (stop, move, start)"],
]);
const SELECTORS = /** @type {[string, string][]} */ ([
  ["", "the cluster's (scheduler.selector)"],
  ["mem", "mem: most free memory"],
  ["memprov", "memprov: least provisioned memory"],
  ["vcpus", "vcpus: most free vCPUs"],
  ["load", "load: lowest load"],
  ["vms", "vms: fewest VMs"],
  ["static", "static: lowest vCPU + memory share of every VM placed"],
]);
const HA = /** @type {[string, string][]} */ ([
  ["", "default (restart while it is meant to run)"],
  ["restart", "restart"],
  ["none", "none"],
]);
const ON_LOST = /** @type {[string, string][]} */ ([
  ["none", "none (ERROR)"],
  ["start", "start it on its owner"],
]);

/**
 * The meta controls. With `vm` (an edit), each starts at the VM's value and `changes()`
 * gives only the fields changed; without (a create), `values()` gives the fields set.
 * @param {string[]} nodes the nodes a limit can name
 * @param {any} [vm]
 */
export function metaControls(nodes, vm) {
  const limit = new Set(vm?.node_limit ?? []);
  const names = [...new Set([...nodes, ...limit])].sort();
  const method = select("migration_method", METHODS, vm?.migration_method ?? "default");
  const selector = select("node_selector", SELECTORS, vm?.node_selector ?? "");
  const ha = select("ha", HA, vm ? vm.ha : "");
  const priority = h("input", {
    type: "number",
    name: "ha_priority",
    min: -1000,
    max: 1000,
    step: 1,
    value: vm ? vm.ha_priority : "",
    placeholder: "0",
  });
  const onLost = select("on_lost", ON_LOST, vm?.on_lost ?? "none");
  const boxes = names.map((n) =>
    h(
      "label",
      { class: "check" },
      h("input", { type: "checkbox", name: "node_limit", value: n, checked: limit.has(n) }),
      n,
    ),
  );
  const root = h(
    "div",
    { class: "meta-fields" },
    labelled("migration_method", "Migration method", method, "How it moves between nodes."),
    h(
      "fieldset",
      { class: "field", "aria-describedby": "node-limit-help error-node_limit" },
      h("legend", null, "Node limit"),
      boxes.length > 0 ? h("div", { class: "checks" }, boxes) : h("p", { class: "muted" }, "No nodes."),
      h("small", { id: "node-limit-help", class: "muted" }, "The only nodes it may run on; none checked: any node."),
      errorSlot("node_limit"),
    ),
    labelled("node_selector", "Node selector", selector, "How a target node is picked for it."),
    labelled("ha", "HA", ha, "After its node is fenced: restart it on another node, or not."),
    labelled("ha_priority", "HA priority", priority, "Order of recovery after a fence: higher first (-1000 to 1000)."),
    labelled("on_lost", "On lost", onLost, "When a migration leaves it running nowhere."),
  );

  /** Every field's value as the API takes it (null for "the default"). */
  function current() {
    const text = /** @type {HTMLInputElement} */ (priority).value.trim();
    return {
      migration_method: /** @type {HTMLSelectElement} */ (method).value,
      node_limit: [...root.querySelectorAll("input[name=node_limit]:checked")].map(
        (b) => /** @type {HTMLInputElement} */ (b).value,
      ),
      node_selector: /** @type {HTMLSelectElement} */ (selector).value || null,
      ha: /** @type {HTMLSelectElement} */ (ha).value || null,
      ha_priority: text === "" ? null : Number(text),
      on_lost: /** @type {HTMLSelectElement} */ (onLost).value,
    };
  }
  const before = /** @type {Record<string, any>} */ (current());

  return {
    root,
    /** For a create: the fields set (defaults left out, as the API assumes them). */
    values() {
      /** @type {Record<string, any>} */
      const body = {};
      for (const [key, value] of Object.entries(current())) {
        if (value === null || (Array.isArray(value) && value.length === 0)) continue;
        body[key] = value;
      }
      return body;
    },
    /** For an edit: the fields changed since the form was drawn. */
    changes() {
      /** @type {Record<string, any>} */
      const body = {};
      for (const [key, value] of Object.entries(current())) {
        if (JSON.stringify(value) !== JSON.stringify(before[key])) body[key] = value;
      }
      return body;
    },
  };
}

/**
 * The meta of a VM as facts.
 * @param {any} vm
 */
export function metaFacts(vm) {
  return facts([
    ["Migration method", vm.migration_method, "migration_method"],
    ["Node limit", (vm.node_limit ?? []).join(", ") || "any node", "node_limit"],
    ["Node selector", vm.node_selector ?? "the cluster's", "node_selector"],
    ["HA", vm.ha, "ha"],
    ["HA priority", String(vm.ha_priority), "ha_priority"],
    ["On lost", vm.on_lost, "on_lost"],
    ["Autostart", vm.autostart ? "yes" : "no", "autostart"],
  ]);
}
