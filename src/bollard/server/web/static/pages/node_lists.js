// @ts-check
/** The node page's tables: the VMs placed on the node and its recent events. */
import { h, link, table } from "../js/dom.js";
import { ago, memory, tone, when } from "../js/format.js";
import { badge } from "../js/ui.js";

/**
 * @typedef {import("./nodes_table.js").Vm} Vm
 * @typedef {import("../js/live.js").BollardEvent} BollardEvent
 */

/**
 * The VMs on a node: vm-rows with status, node, size, HA, desired and observed power, task.
 * @param {Vm[]} vms
 * @param {string} node
 */
export function vmTable(vms, node) {
  /** @type {import("../js/dom.js").Column<Vm>[]} */
  const columns = [
    { title: "Name", field: "name", cell: (vm) => link(`#/vms/${encodeURIComponent(vm.name)}`, vm.name) },
    { title: "Status", field: "status", cell: (vm) => badge(vm.status, tone(vm.status)) },
    { title: "Node", field: "node", cell: (vm) => vm.node ?? "–" },
    { title: "vCPUs", field: "vcpus", cell: (vm) => vm.vcpus },
    { title: "Memory", field: "memory", cell: (vm) => memory(vm.memory_mb) },
    { title: "HA", field: "ha", cell: (vm) => vm.ha },
    { title: "Power wanted / seen", field: "power", cell: (vm) => `${vm.desired_power} / ${vm.observed_power ?? "–"}` },
    {
      title: "Task",
      field: "task",
      cell: (vm) => (vm.task_id ? link(`#/tasks/${encodeURIComponent(vm.task_id)}`, vm.task_state ?? "task") : vm.task_state ?? ""),
    },
  ];
  return table(columns, vms, (vm) => ({ dataset: { testid: "vm-row", vm: vm.name, status: vm.status } }), `No VM is placed on ${node}.`);
}

/**
 * Events, newest first: time, kind, VM, task, actor, message.
 * @param {BollardEvent[]} events newest first
 * @param {string} node
 */
export function eventTable(events, node) {
  const now = Date.now();
  /** @type {import("../js/dom.js").Column<BollardEvent>[]} */
  const columns = [
    { title: "Time", field: "at", cell: (e) => h("time", { datetime: e.at, title: ago(e.at, now) }, when(e.at)) },
    { title: "Kind", field: "kind", cell: (e) => e.kind },
    { title: "VM", field: "vm", cell: (e) => (e.vm ? link(`#/vms/${encodeURIComponent(e.vm)}`, e.vm) : "") },
    {
      title: "Task",
      field: "task",
      cell: (e) => (e.task_id ? link(`#/tasks/${encodeURIComponent(e.task_id)}`, e.task_id.slice(0, 8), { title: e.task_id }) : ""),
    },
    { title: "Actor", field: "actor", cell: (e) => e.actor ?? "" },
    { title: "Message", field: "message", cell: (e) => e.message },
  ];
  return table(columns, events, (e) => ({ dataset: { testid: "event-row", event: e.id, kind: e.kind } }), `No events of ${node} yet.`);
}

/** Health states from which an operator may confirm the node down (server: node_ops). */
export const CONFIRMABLE = new Set(["dead", "fence_failed", "suspect"]);
/** Scheduling states a flush may start from, and an unflush (server: drain_ops). */
export const FLUSHABLE = new Set(["ready", "unflushing"]);
export const UNFLUSHABLE = new Set(["flushing", "flushed", "maintenance", "unflushing"]);
