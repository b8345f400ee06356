// @ts-check
/** A VM's HA fields on its page: their facts (request state, group, restarts and relocations
 * with their limits) and the controls of its edit form (`PATCH /vms/{name}` with `ha_state`,
 * `ha_group`, `max_restart`, `max_relocate`: only what changed). Setting the request state
 * started on a stopped VM starts it, stopped on a running one shuts it down, and any state
 * clears an error state. */
import { facts, h } from "../js/dom.js";
import { HA_STATES, haPairs } from "./ha_parts.js";
import { labelled, select } from "./vm_common.js";

const STATE_LABELS = /** @type {Record<string, string>} */ ({
  started: "started: HA keeps it running (starts it now if stopped)",
  stopped: "stopped: HA keeps it stopped (shuts it down now if running)",
  disabled: "disabled: not HA",
  ignored: "ignored: HA never touches it",
});

/**
 * The VM's HA facts.
 * @param {any} vm
 */
export function haFacts(vm) {
  return facts(haPairs(vm));
}

/** What of a VM the HA facts show (for a redraw's signature). @param {any} vm */
export function haSignature(vm) {
  return JSON.stringify([vm.ha_state, vm.ha_group, vm.max_restart, vm.max_relocate, vm.ha_restarts, vm.ha_relocates]);
}

/**
 * @param {string} name
 * @param {number | null | undefined} value
 */
function limitInput(name, value) {
  return h("input", { type: "number", name, min: 0, max: 100, step: 1, value: value ?? "", placeholder: "the setting's" });
}

/**
 * The HA controls of the VM's edit form, each starting at the VM's value; `changes()` gives
 * the fields changed. An error state is shown as such and sent only when another is chosen.
 * @param {string[]} groups the HA groups' names
 * @param {any} vm
 */
export function haControls(groups, vm) {
  /** @type {[string, string][]} */
  const states = HA_STATES.map((s) => [s, STATE_LABELS[s]]);
  if (vm.ha_state === "error") states.unshift(["error", "error: limits ran out (choose a state to clear it)"]);
  const state = select("ha_state", states, vm.ha_state);
  const names = [...new Set([...groups, ...(vm.ha_group ? [vm.ha_group] : [])])].sort();
  const group = select("ha_group", [["", "none"], ...names.map((n) => /** @type {[string, string]} */ ([n, n]))], vm.ha_group ?? "");
  const maxRestart = limitInput("max_restart", vm.max_restart);
  const maxRelocate = limitInput("max_relocate", vm.max_relocate);
  const root = h(
    "div",
    { class: "meta-fields", "data-testid": "ha-fields" },
    labelled("ha_state", "HA state", state, "What HA does with it. Setting one clears an error state and its counts."),
    labelled("ha_group", "HA group", group, "It runs on the group's highest-priority available node."),
    labelled("max_restart", "Max restarts", maxRestart, "Failed starts retried on its node before it is moved (0 to 100; empty: the setting ha.max_restart)."),
    labelled("max_relocate", "Max relocations", maxRelocate, "Moves to another node before it is left in error (0 to 100; empty: the setting ha.max_relocate)."),
  );

  /** @param {HTMLElement} input */
  const number = (input) => {
    const text = /** @type {HTMLInputElement} */ (input).value.trim();
    return text === "" ? null : Number(text);
  };
  function current() {
    return {
      ha_state: /** @type {HTMLSelectElement} */ (state).value,
      ha_group: /** @type {HTMLSelectElement} */ (group).value,
      max_restart: number(maxRestart),
      max_relocate: number(maxRelocate),
    };
  }
  const before = /** @type {Record<string, any>} */ (current());
  return {
    root,
    /** The fields changed since the form was drawn. */
    changes() {
      /** @type {Record<string, any>} */
      const body = {};
      for (const [key, value] of Object.entries(current())) {
        if (value !== before[key]) body[key] = value;
      }
      return body;
    },
  };
}
