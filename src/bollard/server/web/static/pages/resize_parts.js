// @ts-check
/** What the console shows about resizes, migration records and a node's allocations: the
 * text of the confirm-or-revert panel, the line of a resize under way, a record's flavors
 * and source hold, tones of their states, and the tables of `MigrationOut`
 * (GET /api/v1/migrations) and of a node's `allocations` (GET /api/v1/nodes/{name}). Pure
 * builders: no state, no requests. */
import { h, link, table } from "../js/dom.js";
import { ago, memory, tone, when } from "../js/format.js";
import { badge } from "../js/ui.js";
import { flavorCell, flavorLabel } from "./flavor_parts.js";
import { nodeRoute, taskRoute, vmRoute } from "./vm_common.js";

/**
 * @typedef {import("./flavor_parts.js").FlavorRef} FlavorRef
 * @typedef {{node: string, vcpus: number, memory_mb: number}} Hold
 */
/**
 * A VM's open resize (`VmOut.resize`).
 * @typedef {{migration_id: string, source: string | null, dest: string | null, old_flavor: FlavorRef | null, new_flavor: FlavorRef | null, status: string, finished_at: string | null}} OpenResize
 */
/**
 * A migration record as `GET /api/v1/migrations` gives it.
 * @typedef {object} Migration
 * @property {string} id
 * @property {string} vm
 * @property {string} vm_uuid
 * @property {"migration" | "live-migration" | "resize" | "evacuation"} type
 * @property {string | null} source
 * @property {string | null} dest
 * @property {string} status
 * @property {string | null} task_id
 * @property {FlavorRef | null} old_flavor
 * @property {FlavorRef | null} new_flavor
 * @property {Hold | null} source_hold
 * @property {string | null} error
 * @property {string} created_at
 * @property {string} updated_at
 * @property {string | null} finished_at
 */
/**
 * What a node's resources are taken by (`NodeOut.allocations`).
 * @typedef {{consumer: "vm" | "migration", vm: string, migration_id: string | null, vcpus: number, memory_mb: number}} Allocation
 */

/** The statuses of a VM in a resize (domain/states.py ApiStatus). */
export const RESIZE_STATUSES = new Set(["RESIZE", "VERIFY_RESIZE", "REVERT_RESIZE"]);

/**
 * A VM status's tone: REVERT_RESIZE is busy too (format.js knows the others).
 * @param {string | null | undefined} status
 */
export function statusTone(status) {
  return status === "REVERT_RESIZE" ? "busy" : tone(status);
}

/**
 * What confirming or reverting a resize in VERIFY_RESIZE will do: "Resized from small on
 * node1 to large on node2: confirm (deletes the old copy) or revert (back to node1 at
 * small)".
 * @param {OpenResize} resize
 */
export function verifyText(resize) {
  const old = flavorLabel(resize.old_flavor);
  const next = flavorLabel(resize.new_flavor);
  const source = resize.source ?? "its old node";
  const dest = resize.dest ?? "its new node";
  if (resize.source && resize.source === resize.dest) {
    return (
      `Resized from ${old} to ${next} on ${source}: confirm (deletes the old copy) or revert ` +
      `(back to ${old})`
    );
  }
  return (
    `Resized from ${old} on ${source} to ${next} on ${dest}: confirm (deletes the old copy) or ` +
    `revert (back to ${source} at ${old})`
  );
}

/**
 * Whether a VM in VERIFY_RESIZE can be confirmed or reverted now: its resize task has ended
 * (the status turns VERIFY_RESIZE while the task still starts the guest on the destination)
 * and its resize record is `finished`. Else the server refuses both (409).
 * @param {{status: string, task_id?: string | null, resize?: OpenResize | null}} vm
 */
export function decidable(vm) {
  if (vm.status !== "VERIFY_RESIZE" || vm.task_id) return false;
  return !vm.resize || vm.resize.status === "finished";
}

/**
 * Why a VM in VERIFY_RESIZE cannot be confirmed or reverted yet ("" when it can).
 * @param {{status: string, task_id?: string | null, task_state?: string | null, resize?: OpenResize | null}} vm
 */
export function undecidableWhy(vm) {
  if (vm.status !== "VERIFY_RESIZE" || decidable(vm)) return "";
  if (vm.task_state === "resize_confirming") {
    return `Being confirmed: the old copy${vm.resize?.source ? ` on ${vm.resize.source}` : ""} is being deleted (resize_confirming).`;
  }
  if (vm.task_id) return `The resize is ending (${vm.task_state ?? "its task runs"}): confirm and revert come when its task has.`;
  return `The resize record is ${vm.resize?.status ?? "not finished"}: confirm and revert come when it is finished.`;
}

/**
 * The line of a VM in RESIZE or REVERT_RESIZE: what it is doing and its task state
 * ("Resizing from small to large: resize_migrating"); "" for any other status.
 * @param {{status: string, task_state?: string | null, resize?: OpenResize | null}} vm
 */
export function resizeLine(vm) {
  const step = vm.task_state ?? "no task state";
  const r = vm.resize ?? null;
  if (vm.status === "RESIZE") {
    return r ? `Resizing from ${flavorLabel(r.old_flavor)} to ${flavorLabel(r.new_flavor)}: ${step}` : `Resizing: ${step}`;
  }
  if (vm.status === "REVERT_RESIZE") {
    const back = r?.source ? ` to ${r.source}` : "";
    return r ? `Reverting the resize${back} at ${flavorLabel(r.old_flavor)}: ${step}` : `Reverting the resize: ${step}`;
  }
  return "";
}

/**
 * A record's change of flavor: "small → large" (a resize), else null.
 * @param {{type: string, old_flavor: FlavorRef | null, new_flavor: FlavorRef | null}} m
 */
export function flavorChange(m) {
  if (m.type !== "resize" && !m.old_flavor && !m.new_flavor) return null;
  return `${flavorLabel(m.old_flavor)} → ${flavorLabel(m.new_flavor)}`;
}

/**
 * A source hold: "node1: 1 vCPU, 512 MiB" (what the source keeps for a revert), or null.
 * @param {Hold | null | undefined} hold
 */
export function holdText(hold) {
  return hold ? `${hold.node}: ${hold.vcpus} vCPU, ${memory(hold.memory_mb)}` : null;
}

/**
 * Where a record went: "node1 → node2" (a missing side as "–").
 * @param {{source: string | null, dest: string | null}} m
 */
export function routeText(m) {
  return `${m.source ?? "–"} → ${m.dest ?? "–"}`;
}

/** A migration record's states by tone (the rest are under way; a resize `finished` waits
 * for the operator to confirm or revert it). */
const MIGRATION_TONES = /** @type {Record<string, string>} */ ({
  completed: "good",
  finished: "warn",
  confirmed: "good",
  reverted: "warn",
  failed: "bad",
  error: "bad",
});

/**
 * @param {string} status
 */
export function migrationTone(status) {
  return MIGRATION_TONES[status] ?? "busy";
}

/** States after which a migration record no longer changes. */
export const MIGRATION_ENDED = new Set(["completed", "confirmed", "reverted", "failed", "error"]);

/**
 * Whether a record may still change (for polling the page while one runs). A resize that
 * is `finished` waits for confirm or revert: it changes, but not by itself quickly.
 * @param {{status: string}} m
 */
export function migrationOpen(m) {
  return !MIGRATION_ENDED.has(m.status) && m.status !== "finished";
}

/**
 * A route to the migrations page, filtered on one VM when given.
 * @param {string | null} [vm]
 */
export function migrationsRoute(vm) {
  return vm ? `#/migrations?vm=${encodeURIComponent(vm)}` : "#/migrations";
}

/**
 * The VM filter of a `#/migrations?vm=NAME` route's query ("" for none).
 * @param {string | null | undefined} query what follows '?'
 */
export function vmOfQuery(query) {
  if (!query) return "";
  return new URLSearchParams(query).get("vm") ?? "";
}

/**
 * The migration records, newest first.
 * @param {Migration[]} items
 * @param {number} now
 * @param {string} [empty]
 */
export function migrationTable(items, now, empty = "No migrations yet.") {
  return table(
    [
      { title: "Created", field: "created", cell: (m) => h("time", { datetime: m.created_at, title: ago(m.created_at, now) }, when(m.created_at)) },
      { title: "VM", field: "vm", cell: (m) => link(vmRoute(m.vm), m.vm) },
      { title: "Type", field: "type", cell: (m) => m.type },
      {
        title: "From → to",
        field: "route",
        cell: (m) => [m.source ? link(nodeRoute(m.source), m.source) : "–", " → ", m.dest ? link(nodeRoute(m.dest), m.dest) : "–"],
      },
      { title: "Status", field: "status", cell: (m) => badge(m.status, migrationTone(m.status)) },
      {
        title: "Flavor",
        field: "flavor",
        cell: (m) => (flavorChange(m) === null ? "" : [flavorCell(m.old_flavor), " → ", flavorCell(m.new_flavor)]),
      },
      { title: "Source hold", field: "hold", cell: (m) => holdText(m.source_hold) ?? "" },
      { title: "Task", field: "task", cell: (m) => (m.task_id ? link(taskRoute(m.task_id), `…${m.task_id.slice(-8)}`, { title: m.task_id }) : "") },
      { title: "Finished", field: "finished", cell: (m) => (m.finished_at ? when(m.finished_at) : "") },
      { title: "Error", field: "error", cell: (m) => m.error ?? "" },
    ],
    items,
    (m) => ({ dataset: { testid: "migration-row", migration: m.id, vm: m.vm, type: m.type, status: m.status } }),
    empty,
  );
}

/**
 * What a node's allocations add up to: "2 VMs and 1 resize hold: 3 vCPU, 1.5 GiB".
 * @param {Allocation[]} allocations
 */
export function allocationSummary(allocations) {
  const vms = allocations.filter((a) => a.consumer === "vm").length;
  const holds = allocations.length - vms;
  const vcpus = allocations.reduce((n, a) => n + a.vcpus, 0);
  const mem = allocations.reduce((n, a) => n + a.memory_mb, 0);
  const parts = [`${vms} VM${vms === 1 ? "" : "s"}`];
  if (holds > 0) parts.push(`${holds} resize hold${holds === 1 ? "" : "s"}`);
  return `${parts.join(" and ")}: ${vcpus} vCPU, ${memory(mem)}`;
}

/**
 * A node's allocations: what takes its vCPUs and memory (the VMs it owns; the resize holds
 * it keeps as the source of a resize waiting for confirm or revert).
 * @param {Allocation[]} allocations
 * @param {string} node
 */
export function allocationTable(allocations, node) {
  const rank = (/** @type {Allocation} */ a) => (a.consumer === "vm" ? 0 : 1);
  const sorted = [...allocations].sort((a, b) => rank(a) - rank(b) || a.vm.localeCompare(b.vm));
  return table(
    [
      {
        title: "Held by",
        field: "consumer",
        cell: (a) => (a.consumer === "vm" ? "VM" : h("span", { title: "The source of a resize keeps the old size until it is confirmed or reverted." }, "resize hold")),
      },
      { title: "VM", field: "vm", cell: (a) => link(vmRoute(a.vm), a.vm) },
      {
        title: "Migration",
        field: "migration",
        cell: (a) => (a.migration_id ? link(migrationsRoute(a.vm), `…${a.migration_id.slice(-8)}`, { title: a.migration_id }) : ""),
      },
      { title: "vCPUs", field: "vcpus", cell: (a) => String(a.vcpus) },
      { title: "Memory", field: "memory", cell: (a) => memory(a.memory_mb) },
    ],
    sorted,
    (a) => ({ dataset: { testid: "allocation-row", vm: a.vm, consumer: a.consumer } }),
    `Nothing is allocated on ${node}.`,
  );
}
