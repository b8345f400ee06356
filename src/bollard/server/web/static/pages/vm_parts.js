// @ts-check
/** What the VM page shows, drawn from the API's answers: intent next to observation (as
 * `bollard vm show`), disks, NICs, the VM's tasks and its events. Pure builders: no state,
 * no requests. */
import { facts, h, link, table } from "../js/dom.js";
import { ago, memory, outcomeLine, progressLine, tone, when } from "../js/format.js";
import { badge } from "../js/ui.js";
import { flavorCell, flavorSize } from "./flavor_parts.js";
import { poolRoute, volumeRoute, volumeTone } from "./storage_parts.js";
import { nodeRoute, taskRoute } from "./vm_common.js";

/**
 * Whether what the host reports differs from the record (no report: nothing to compare; a
 * paused VM is still meant to be running).
 * @param {unknown} record
 * @param {unknown} host
 */
export function differs(record, host) {
  if (host === null || host === undefined || host === record) return false;
  return !(record === "running" && host === "paused");
}

/**
 * A host's value, marked when it differs from the record's.
 * @param {unknown} record
 * @param {unknown} host
 * @param {(v: any) => string} [show]
 */
function observed(record, host, show = String) {
  if (host === null || host === undefined) return h("span", { class: "muted" }, "not reported");
  return [
    show(host),
    differs(record, host) ? h("span", { class: "badge warn", "data-testid": "differs" }, "differs") : null,
  ];
}

/**
 * Intent (what the database holds) and observation (what the host last reported), side by side.
 * @param {any} vm
 * @param {number} now
 */
export function sides(vm, now) {
  const intent = facts([
    ["Node", vm.node ? link(nodeRoute(vm.node), vm.node) : "none", "node"],
    ["Power", vm.desired_power, "desired_power"],
    // (the flavor as it was when applied; "custom": a size given by hand)
    ["Flavor", [flavorCell(vm.flavor), vm.flavor ? h("span", { class: "muted" }, ` (${flavorSize(vm.flavor)})`) : null], "flavor"],
    ["vCPUs", String(vm.vcpus), "vcpus"],
    ["Memory", memory(vm.memory_mb), "memory_mb"],
    ["Epoch", String(vm.epoch), "epoch"],
    ["Previous node", vm.previous_node ? link(nodeRoute(vm.previous_node), vm.previous_node) : null, "previous_node"],
    ["State", `${vm.vm_state}${vm.task_state ? ` / ${vm.task_state}` : ""}`, "vm_state"],
    ["Task", vm.task_id ? link(taskRoute(vm.task_id), vm.task_state ?? vm.task_id) : null, "task"],
    ["UUID", h("code", null, vm.uuid), "uuid"],
    ["Created", when(vm.created_at), "created_at"],
    ["Updated", when(vm.updated_at), "updated_at"],
  ]);
  const host = facts([
    ["Reported by", vm.node ?? "no node", "observed_node"],
    ["Power", observed(vm.desired_power, vm.observed_power), "observed_power"],
    ["vCPUs", observed(vm.vcpus, vm.observed_vcpus), "observed_vcpus"],
    ["Memory", observed(vm.memory_mb, vm.observed_memory_mb, memory), "observed_memory_mb"],
    ["Observed", vm.observed_at ? `${when(vm.observed_at)} (seq ${vm.observed_seq})` : "never", "observed_at"],
    [
      "Host last reported",
      vm.reported_at ? h("span", { title: vm.reported_at }, ago(vm.reported_at, now)) : "never",
      "reported_at",
    ],
    ["Fault", vm.fault ? h("span", { class: "badge bad" }, vm.fault) : null, "fault"],
  ]);
  return h(
    "div",
    { class: "columns" },
    h("section", { class: "card", "data-testid": "vm-intent", "aria-labelledby": "vm-intent-title" },
      h("h2", { id: "vm-intent-title" }, "Intent (record)"),
      intent,
    ),
    h("section", { class: "card", "data-testid": "vm-observed", "aria-labelledby": "vm-observed-title" },
      h("h2", { id: "vm-observed-title" }, "Observation (host)"),
      host,
    ),
  );
}

/**
 * The VM's disks, each with its volume (a link), pool and the volume's state.
 * @param {any[]} disks
 */
export function disksTable(disks) {
  return table(
    [
      { title: "Device", field: "device", cell: (d) => d.device },
      { title: "Size", field: "size", cell: (d) => memory(d.size_mb) },
      { title: "Volume", field: "volume", cell: (d) => (d.volume ? link(volumeRoute(d.volume), d.volume) : "–") },
      { title: "Pool", field: "pool", cell: (d) => (d.pool ? link(poolRoute(d.pool), d.pool) : "–") },
      { title: "State", field: "state", cell: (d) => (d.state ? badge(d.state, volumeTone(d.state)) : "–") },
    ],
    disks,
    (d) => ({ dataset: { testid: "disk-row", device: d.device, volume: d.volume ?? null } }),
    "No disks.",
  );
}

/**
 * What a NIC is on: "network default", "bridge br0", or "SR-IOV physnet1 (macvtap)" (its VF is
 * on the node's page).
 * @param {any} n
 */
export function nicAttachment(n) {
  if (n.sriov) return `SR-IOV ${n.sriov} (${n.mode ?? "macvtap"})`;
  return n.network ? `network ${n.network}` : `bridge ${n.bridge}`;
}

/** @param {any[]} nics */
export function nicsTable(nics) {
  return table(
    [
      { title: "MAC", field: "mac", cell: (n) => h("code", null, n.mac) },
      { title: "On", field: "attachment", cell: nicAttachment },
      { title: "Model", field: "model", cell: (n) => n.model },
    ],
    nics,
    (n) => ({ dataset: { testid: "nic-row", mac: n.mac } }),
    "No network interfaces.",
  );
}

/**
 * @param {any[]} tasks newest first
 * @param {number} now
 */
export function tasksTable(tasks, now) {
  const running = (/** @type {any} */ t) => t.state === "running" || t.state === "pending";
  return table(
    [
      { title: "State", field: "state", cell: (t) => badge(t.state, tone(t.state)) },
      { title: "Task", field: "type", cell: (t) => link(taskRoute(t.id), t.type) },
      {
        title: "Progress / outcome",
        field: "progress",
        cell: (t) => (running(t) ? progressLine(t) || t.state : outcomeLine(t)),
      },
      { title: "Node", field: "node", cell: (t) => t.node ?? "" },
      { title: "By", field: "actor", cell: (t) => t.actor ?? "" },
      { title: "Created", field: "created", cell: (t) => h("span", { title: when(t.created_at) }, ago(t.created_at, now)) },
    ],
    tasks,
    (t) => ({ dataset: { testid: "task-row", task: t.id, state: t.state } }),
    "No tasks.",
  );
}

/**
 * @param {any[]} events newest first
 * @param {Map<string, string>} taskTypes the type of each task known, by id
 */
export function eventsTable(events, taskTypes) {
  return table(
    [
      { title: "Time", field: "at", cell: (e) => when(e.at) },
      { title: "Kind", field: "kind", cell: (e) => e.kind },
      { title: "Node", field: "node", cell: (e) => (e.node ? link(nodeRoute(e.node), e.node) : "") },
      { title: "Task", field: "task", cell: (e) => (e.task_id ? link(taskRoute(e.task_id), taskTypes.get(e.task_id) ?? e.task_id.slice(-12)) : "") },
      { title: "By", field: "actor", cell: (e) => e.actor ?? "" },
      { title: "Message", field: "message", cell: (e) => e.message },
    ],
    events,
    (e) => ({ dataset: { testid: "event-row", event: e.id, kind: e.kind } }),
    "No events.",
  );
}
