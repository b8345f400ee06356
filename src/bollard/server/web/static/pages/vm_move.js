// @ts-check
/** Moving a VM between cells (through an API server: a VM's answers name its `cell`). The
 * resize and migrate forms' targets grouped by cell: the VM's own cell's candidates as its
 * scheduler ranks them, then every node of each other cell (from `GET /nodes`), a node of
 * another cell meaning a move between cells; what the settings `policy.vm_resize_cross_cell`
 * and `policy.vm_migrate_cross_cell` say of the caller's role. On the VM page, what a move
 * does: the cells it goes from and to (a node's cell from `GET /nodes/NAME`, else the VM's
 * own `cell`), and its task's step and progress (`GET /tasks/ID` of the API server: a move's
 * task has the id of its migration record, `resize.migration_id`; a confirm's or revert's is
 * the one their 202 answer named). */
import { pathOf } from "../js/api.js";
import { h, link } from "../js/dom.js";
import { memory, percent } from "../js/format.js";
import { isPartial } from "./cell_parts.js";
import { migrationOpen } from "./resize_parts.js";
import { taskRoute } from "./vm_common.js";

/**
 * @typedef {import("../js/ui.js").Ctx} Ctx
 * @typedef {"resize" | "migrate"} MoveKind
 * @typedef {{name: string, cell: string, why: string, free: string}} Target a node of another cell
 * @typedef {{cell: string, nodes: Target[]}} CellTargets
 * @typedef {{source: string | null, target: string | null, task: any}} Move what the VM page knows of a move
 */

const RANKS = /** @type {Record<string, number>} */ ({ reader: 0, operator: 1, admin: 2 });

/**
 * The setting that says who may move a VM between cells this way.
 * @param {MoveKind} kind
 */
export function policyKey(kind) {
  return `policy.vm_${kind}_cross_cell`;
}

/**
 * Whether `role` may, when the setting names `lowest` (nobody | admin | operator | reader).
 * @param {string} role
 * @param {string | null} lowest
 */
export function mayMove(role, lowest) {
  if (!lowest || !(lowest in RANKS)) return false;
  return (RANKS[role] ?? -1) >= RANKS[lowest];
}

/**
 * What the setting says of the caller ("" when it could not be read: the server decides).
 * @param {MoveKind} kind
 * @param {string | null} lowest the setting's value
 * @param {string} role the caller's
 */
export function policyText(kind, lowest, role) {
  const key = policyKey(kind);
  if (lowest === null) return "";
  if (!(lowest in RANKS)) return `Nobody may now: the setting ${key} is ${lowest}; the server refuses it (403).`;
  const who = lowest === "admin" ? "admins only" : lowest === "reader" ? "every role" : `${lowest}s and admins`;
  return mayMove(role, lowest)
    ? `You may (role ${role}): the setting ${key} allows ${who}.`
    : `Your role (${role}) may not: the setting ${key} allows ${who}; the server refuses it (403).`;
}

/**
 * Why a node cannot take a VM now ("" when it can): not up, or not ready for new VMs.
 * @param {{health?: string, scheduling?: string}} node
 */
export function notReadyWhy(node) {
  const why = [];
  if (node.health && node.health !== "up") why.push(node.health);
  if (node.scheduling && node.scheduling !== "ready") why.push(node.scheduling);
  return why.join(", ");
}

/**
 * The nodes of the cells other than `ownCell`, by cell then name (a node of a cell that did
 * not answer is left out: nothing is known of it).
 * @param {any[]} nodes `GET /nodes` items
 * @param {string} ownCell
 * @returns {CellTargets[]}
 */
export function otherCellTargets(nodes, ownCell) {
  /** @type {Map<string, Target[]>} */
  const byCell = new Map();
  for (const n of nodes) {
    if (!n || isPartial(n) || typeof n.cell !== "string" || !n.cell || n.cell === ownCell) continue;
    const free = n.free ? `${n.free.vcpus} vCPU, ${memory(n.free.memory_mb)} free` : "";
    const list = byCell.get(n.cell) ?? [];
    list.push({ name: String(n.name), cell: n.cell, why: notReadyWhy(n), free });
    byCell.set(n.cell, list);
  }
  return [...byCell.entries()]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([cell, list]) => ({ cell, nodes: list.sort((a, b) => a.name.localeCompare(b.name)) }));
}

/**
 * Read what the forms need in cells mode: every node (grouped by other cell) and the policy
 * setting. A failure to list the nodes is said (`error`); an unreadable setting is null.
 * @param {Ctx} ctx
 * @param {string} ownCell
 * @param {MoveKind} kind
 * @returns {Promise<{groups: CellTargets[], lowest: string | null, error: string | null}>}
 */
export async function loadTargets(ctx, ownCell, kind) {
  const setting = ctx.api.get(`/settings/${policyKey(kind)}`).then(
    (s) => (s && typeof s.value === "string" ? s.value : null),
    (err) => {
      console.warn(`the setting ${policyKey(kind)} could not be read`, err);
      return null;
    },
  );
  try {
    const nodes = await ctx.api.all("/nodes");
    return { groups: otherCellTargets(nodes, ownCell), lowest: await setting, error: null };
  } catch (err) {
    return { groups: [], lowest: await setting, error: err instanceof Error ? err.message : String(err) };
  }
}

/**
 * A target radio of a form: `<label data-testid=… data-node data-cell><input type=radio
 * name=to value=node data-cell data-cross>text</label>`.
 * @param {string} testid
 * @param {string} value
 * @param {import("../js/dom.js").Child | import("../js/dom.js").Child[]} text
 * @param {{node?: string | null, cell?: string | null, cross?: boolean, checked?: boolean, disabled?: boolean}} [opts]
 */
export function targetChoice(testid, value, text, opts = {}) {
  return h(
    "label",
    { class: "check", dataset: { testid, node: opts.node ?? null, cell: opts.cell ?? null } },
    h("input", {
      type: "radio",
      name: "to",
      value,
      checked: Boolean(opts.checked),
      disabled: Boolean(opts.disabled),
      dataset: { cell: opts.cell ?? null, cross: opts.cross ? "true" : null },
    }),
    text,
  );
}

/**
 * The targets of a form in cells mode: a group of the VM's own cell (`own`: its choices,
 * as the scheduler ranks them) and one for each other cell, whose nodes move it between
 * cells; a node that cannot take a VM now is shown, not choosable, with why.
 * @param {string} testid the choices' data-testid
 * @param {string} ownCell
 * @param {HTMLElement[]} own
 * @param {CellTargets[]} groups
 */
export function cellGroups(testid, ownCell, own, groups) {
  return [
    h(
      "fieldset",
      { class: "choices", dataset: { testid: "target-cell", cell: ownCell } },
      h("legend", null, `Cell ${ownCell} (its own)`),
      own.length > 0 ? own : h("p", { class: "muted" }, "No other node of its cell can take it now."),
    ),
    groups.map((g) =>
      h(
        "fieldset",
        { class: "choices", dataset: { testid: "target-cell", cell: g.cell } },
        h("legend", null, `Cell ${g.cell}: moves it between cells`),
        g.nodes.map((n) =>
          targetChoice(testid, n.name, `${n.name} (${n.why ? `cannot take it: ${n.why}` : n.free || "ready"})`, {
            node: n.name,
            cell: n.cell,
            cross: true,
            disabled: Boolean(n.why),
          }),
        ),
      ),
    ),
  ];
}

/**
 * The chosen radio of `name` in `root`, or null.
 * @param {HTMLElement} root
 * @param {string} [name]
 * @returns {HTMLInputElement | null}
 */
export function chosenRadio(root, name = "to") {
  const radios = /** @type {HTMLInputElement[]} */ ([...root.querySelectorAll(`input[name=${name}]`)]);
  return radios.find((r) => r.checked) ?? null;
}

/**
 * What choosing a node of another cell means, for the forms ("" for a node of its own cell).
 * @param {MoveKind} kind
 * @param {HTMLInputElement | null} radio the chosen target
 */
export function crossNote(kind, radio) {
  if (!radio || radio.dataset.cross !== "true") return "";
  const where = `${radio.value} is in cell ${radio.dataset.cell}: the VM moves between cells`;
  const how = "(stopped, its disks copied through the API server, started there), then waits in VERIFY_RESIZE for you to confirm or revert";
  return kind === "migrate"
    ? `${where} by a shutdown migration only ${how}. A live migration never leaves its cell.`
    : `${where} ${how}.`;
}

// ---------------------------------------------------------------------------------------------
// The VM page.

/**
 * Whether the VM's open resize is a move between cells.
 * @param {any} vm
 */
export function crossCell(vm) {
  return Boolean(vm?.resize?.cross_cell);
}

/** The tasks of confirms and reverts asked from this console, by VM (from their 202). */
const endTasks = /** @type {Map<string, string>} */ (new Map());

/**
 * Keep the task a confirm or revert answered with (a move's confirm and revert are the API
 * server's tasks, which the VM does not name).
 * @param {string} vm
 * @param {{id?: string} | null | undefined} task
 */
export function rememberEndTask(vm, task) {
  if (task?.id) endTasks.set(vm, task.id);
}

/**
 * The id of the API server's task of what the VM's move does now, or null: the move's
 * (its migration record's id) while it is RESIZE; a confirm's or revert's once asked here.
 * @param {any} vm
 */
export function moveTaskId(vm) {
  if (vm.status === "RESIZE") return vm.resize?.migration_id ?? null;
  if (vm.status === "REVERT_RESIZE" || vm.task_state === "resize_confirming") return endTasks.get(vm.name) ?? null;
  return null;
}

/**
 * The id of the VM's newest move still under way (`GET /migrations?vm=NAME`: the API server's
 * records have no cell), for a VM in RESIZE whose answer has no resize.
 * @param {Ctx} ctx
 * @param {string} name
 */
async function newestMoveId(ctx, name) {
  const page = await ctx.api.get("/migrations", { vm: name, limit: 20 });
  const mine = (page.items ?? []).filter((/** @type {any} */ m) => m.vm === name && !m.cell && migrationOpen(m));
  mine.sort((/** @type {any} */ a, /** @type {any} */ b) => String(b.created_at).localeCompare(String(a.created_at)));
  return mine[0]?.id ?? null;
}

/**
 * A node's cell (null when it cannot be read), asked once per page.
 * @param {Ctx} ctx
 * @param {string | null | undefined} node
 * @param {Map<string, string | null>} known
 */
async function cellOfNode(ctx, node, known) {
  if (!node) return null;
  if (known.has(node)) return known.get(node) ?? null;
  try {
    const answer = await ctx.api.get(pathOf("nodes", node));
    const cell = typeof answer?.cell === "string" ? answer.cell : null;
    known.set(node, cell);
    return cell;
  } catch (err) {
    console.warn(`the cell of node ${node} could not be read`, err);
    return null;
  }
}

/**
 * What the VM page shows of a move between cells, or null for a VM in none: its cells (the
 * source node's and the target node's; where a node cannot be read, the VM's own cell: the
 * source's while it moves, the target's once it waits in VERIFY_RESIZE) and its running task.
 * @param {Ctx} ctx
 * @param {any} vm
 * @param {Map<string, string | null>} known the nodes' cells read so far by the page
 * @returns {Promise<Move | null>}
 */
export async function moveOf(ctx, vm, known) {
  const moving = vm.status === "RESIZE" && typeof vm.cell === "string" && !vm.resize;
  if (!crossCell(vm) && !moving) return null;
  const [source, target] = await Promise.all([
    cellOfNode(ctx, vm.resize?.source, known),
    cellOfNode(ctx, vm.resize?.dest, known),
  ]);
  let id = moveTaskId(vm);
  if (!id && moving) {
    try {
      id = await newestMoveId(ctx, vm.name);
    } catch (err) {
      console.warn(`the migrations of ${vm.name} could not be read`, err);
    }
  }
  let task = null;
  if (id) {
    try {
      task = await ctx.api.get(pathOf("tasks", id));
    } catch (err) {
      console.warn(`task ${id} could not be read`, err);
    }
  }
  return {
    source: source ?? (vm.status === "RESIZE" ? vm.cell ?? null : null),
    target: target ?? (vm.status === "VERIFY_RESIZE" ? vm.cell ?? null : null),
    task,
  };
}

/** Steps a move's task is at while it works. */
const AT = new Set(["running", "waiting", "undoing"]);

/**
 * Where a move's task is: "step 5 of 9: transfer, disk vda push 40%"; its state when
 * nothing more is known.
 * @param {{state: string, result?: Record<string, any> | null, steps?: {idx: number, name: string, state: string}[] | null}} task
 */
export function moveStep(task) {
  const steps = Array.isArray(task.steps) ? task.steps : [];
  const at = steps.find((s) => AT.has(s.state));
  const parts = [];
  if (at) parts.push(`step ${at.idx + 1} of ${steps.length}: ${at.name}${at.state === "running" ? "" : ` (${at.state})`}`);
  const p = task.result?.progress;
  if (p && typeof p === "object" && (!at || at.name === "transfer")) {
    const what = [p.disk ? `disk ${p.disk}` : null, p.phase ?? null].filter(Boolean).join(" ");
    parts.push([what, typeof p.fraction === "number" ? percent(p.fraction) : null].filter(Boolean).join(" "));
  }
  const said = parts.filter(Boolean);
  return said.length > 0 ? said.join(", ") : task.state.replace(/_/g, " ");
}

/**
 * "cell cell1 (cell1-node1)": a side of a move.
 * @param {string | null} cell
 * @param {string | null | undefined} node
 */
function side(cell, node) {
  const c = cell ? `cell ${cell}` : "another cell";
  return node ? `${c} (${node})` : c;
}

/**
 * What a move between cells waiting in VERIFY_RESIZE is, and what confirm and revert do.
 * @param {{source: string | null, dest: string | null}} resize
 * @param {Move | null} move
 */
export function crossCellText(resize, move) {
  const from = move?.source ?? null;
  const to = move?.target ?? null;
  return (
    `A move between cells: from ${side(from, resize.source)} to ${side(to, resize.dest)}. ` +
    `Confirm deletes ${from ? `${from}'s` : "the source's"} copy (guest, disks, records) and the images; ` +
    `revert stops it in ${to ?? "the target cell"}, starts it again in ${from ?? "the source cell"} ` +
    `and deletes ${to ? `${to}'s` : "the target's"} copy.`
  );
}

/**
 * The line of a move under way: "Moving from cell cell1 (cell1-node1) to cell cell2
 * (cell2-node1)" (going back for a revert).
 * @param {any} vm
 * @param {Move | null} move
 */
export function movingText(vm, move) {
  const r = vm.resize ?? {};
  if (vm.status === "REVERT_RESIZE") return `Going back from ${side(move?.target ?? null, r.dest)} to ${side(move?.source ?? null, r.source)}`;
  return `Moving from ${side(move?.source ?? null, r.source)} to ${side(move?.target ?? null, r.dest)}`;
}

/**
 * The progress of a move's task as the page shows it: a link to the task, and where it is.
 * @param {any} task
 */
export function moveProgress(task) {
  return h(
    "p",
    { class: "progress-line", "data-testid": "resize-move-progress", dataset: { state: task.state } },
    link(taskRoute(task.id), task.type),
    `: ${moveStep(task)}`,
  );
}
