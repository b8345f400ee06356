// @ts-check
/** Parts of the commands pages: the states, a command's outcome, the command table, and
 * the names of VMs (commands carry only the VM's uuid). */
import { h, table } from "../js/dom.js";
import { tone } from "../js/format.js";
import { badge } from "../js/ui.js";
import { commandLink, nodeLink, shortId, taskLink, time, vmLink } from "./ops_parts.js";

/** The server-side states of a command (domain/commands.py CommandState). */
export const STATES = [
  "CREATED",
  "SENT",
  "COMPLETED",
  "FAILED",
  "INTERRUPTED",
  "TIMED_OUT",
  "RECONCILING",
  "RECONCILED",
  "RECONCILE_RETRY",
  "RECONCILE_FAILED",
  "RECONCILE_SKIPPED",
];

/** States after which nothing happens to a command any more. */
export const TERMINAL = new Set(["COMPLETED", "FAILED", "RECONCILED", "RECONCILE_FAILED", "RECONCILE_SKIPPED"]);

/** The states of commands not finished yet. */
export const OPEN = STATES.filter((s) => !TERMINAL.has(s));

/**
 * @typedef {object} Command
 * @property {string} id
 * @property {string} node
 * @property {string} type
 * @property {Record<string, any>} args
 * @property {string | null} vm_uuid
 * @property {string | null} [vm] the VM's name (a server that sends it)
 * @property {number} epoch
 * @property {string | null} task_id
 * @property {string} state
 * @property {string | null} agent_state
 * @property {Record<string, any> | null} answer
 * @property {string | null} error
 * @property {number} attempts
 * @property {string | null} deadline
 * @property {string} created_at
 * @property {string} updated_at
 * @property {{at: string, from_state: string | null, to_state: string, note: string | null}[] | null} [history]
 */

/**
 * What the agent answered: "ok", "failed: <code>", or "–" (no answer yet), as `command list`.
 * @param {Command} c
 */
export function outcome(c) {
  if (!c.answer) return "–";
  if (c.answer.ok) return "ok";
  return `failed: ${c.answer.error?.code || "error"}`;
}

/**
 * The agent's error message, else the server's.
 * @param {Command} c
 */
export function errorText(c) {
  return c.answer?.error?.message || c.error || null;
}

/**
 * Server state and agent state side by side.
 * @param {Command} c
 */
export function statePair(c) {
  return h(
    "span",
    { class: "state-pair" },
    h("span", { dataset: { field: "state" } }, badge(c.state, tone(c.state))),
    h("span", { class: "muted" }, "/"),
    h("span", { dataset: { field: "agent_state" } }, c.agent_state ? badge(c.agent_state, tone(c.agent_state)) : badge("no entry", "idle")),
  );
}

/**
 * The VM a command is about: its name (linked) when known, else its uuid.
 * @param {Command} c
 * @param {(uuid: string) => string | undefined} nameOf
 */
export function vmCell(c, nameOf) {
  if (!c.vm_uuid) return null;
  const name = c.vm ?? nameOf(c.vm_uuid);
  return name ? vmLink(name) : h("span", { class: "mono", title: c.vm_uuid }, shortId(c.vm_uuid));
}

/**
 * @param {Command[]} commands
 * @param {(uuid: string) => string | undefined} nameOf
 * @param {string} empty
 */
export function commandsTable(commands, nameOf, empty) {
  return table(
    [
      { title: "Id", field: "id", cell: (c) => commandLink(c.id) },
      { title: "Node", field: "node", cell: (c) => nodeLink(c.node) },
      { title: "Type", field: "type", cell: (c) => h("span", { class: "mono" }, c.type) },
      { title: "VM", field: "vm", cell: (c) => vmCell(c, nameOf) },
      { title: "Server", field: "state", cell: (c) => badge(c.state, tone(c.state)) },
      {
        title: "Agent",
        field: "agent_state",
        cell: (c) => (c.agent_state ? badge(c.agent_state, tone(c.agent_state)) : h("span", { class: "muted" }, "–")),
      },
      {
        title: "Outcome",
        field: "outcome",
        cell: (c) => h("span", { class: c.answer && !c.answer.ok ? "bad-text" : null, title: errorText(c) }, outcome(c)),
      },
      { title: "Attempts", field: "attempts", cell: (c) => String(c.attempts) },
      { title: "Created", field: "created", cell: (c) => time(c.created_at) },
      { title: "Task", field: "task", cell: (c) => taskLink(c.task_id) },
    ],
    commands,
    (c) => ({ dataset: { testid: "command-row", command: c.id, state: c.state } }),
    empty,
  );
}

/** Names of VMs by uuid, from `GET /vms` (one page), looked up again at most every 30 s
 * when a uuid is not known (a new VM; a deleted one stays unknown). */
export class VmNames {
  /** @param {import("../js/api.js").Api} api */
  constructor(api) {
    this.api = api;
    /** @type {Map<string, string>} */
    this.names = new Map();
    this.fetchedAt = 0;
  }

  /** @param {string} uuid */
  get(uuid) {
    return this.names.get(uuid);
  }

  /**
   * Make sure the uuids are looked up (at most one request per 30 s).
   * @param {(string | null)[]} uuids
   */
  async learn(uuids) {
    const unknown = uuids.some((u) => u && !this.names.has(u));
    if (!unknown || Date.now() - this.fetchedAt < 30000) return;
    this.fetchedAt = Date.now();
    try {
      const page = await this.api.get("/vms", { limit: 1000 });
      for (const vm of page.items) this.names.set(vm.uuid, vm.name);
    } catch (err) {
      // Names are a convenience: the uuid is shown instead.
      console.warn("VM names not loaded:", err);
    }
  }
}
