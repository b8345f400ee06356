// @ts-check
/** The event table (the events page, a task's page) and the test of an event against the
 * events page's filters (for events that arrive live). */
import { h, table } from "../js/dom.js";
import { nodeLink, taskLink, time, vmLink } from "./ops_parts.js";

/** @typedef {import("../js/live.js").BollardEvent & {vm_uuid?: string | null}} Event */

/**
 * @typedef {object} EventFilters
 * @property {string} vm a VM's name or uuid ("" for any)
 * @property {string} node
 * @property {string} task
 * @property {string} actor
 * @property {string} kind part of the kind, any case
 */

/**
 * Whether an event passes the filters (as the server applies them, and `kind` as "contains").
 * @param {Event} e
 * @param {EventFilters} f
 */
export function matches(e, f) {
  if (f.vm && e.vm !== f.vm && e.vm_uuid !== f.vm) return false;
  if (f.node && e.node !== f.node) return false;
  if (f.task && e.task_id !== f.task) return false;
  if (f.actor && e.actor !== f.actor) return false;
  if (f.kind && !e.kind.toLowerCase().includes(f.kind.toLowerCase())) return false;
  return true;
}

/**
 * Events newest first as event-rows.
 * @param {Event[]} events
 * @param {string} [empty]
 */
export function eventsTable(events, empty = "No events.") {
  return table(
    [
      { title: "Time", field: "at", cell: (e) => time(e.at) },
      { title: "Kind", field: "kind", cell: (e) => h("span", { class: "mono" }, e.kind) },
      { title: "VM", field: "vm", cell: (e) => vmLink(e.vm) },
      { title: "Node", field: "node", cell: (e) => nodeLink(e.node) },
      { title: "Task", field: "task", cell: (e) => taskLink(e.task_id) },
      { title: "Actor", field: "actor", cell: (e) => e.actor ?? "" },
      { title: "Message", field: "message", cell: (e) => h("span", { class: "message" }, e.message) },
    ],
    events,
    (e) => ({ dataset: { testid: "event-row", event: e.id, kind: e.kind } }),
    empty,
  );
}
