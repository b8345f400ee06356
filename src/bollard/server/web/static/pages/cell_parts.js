// @ts-check
/** What the cell pages, the lists and the overview share about cells (an API server in front
 * of several cell servers; `GET /api/v1/status` says `mode: "cells"`): routes, a cell's state
 * as a coloured badge, the cells table, a cell's facts and its status counts, the Cell column
 * of the VM and node tables, the partial items of cells that did not answer (only a name, the
 * cell and a status or health: every other column shows "–", and no link to a page that
 * would fail), and the warning naming each cell that did not answer. Pure builders, except
 * `serverMode` and `listCells` (one request each). */
import { ApiError } from "../js/api.js";
import { facts, h, link, table } from "../js/dom.js";
import { ago, tone, trim, when } from "../js/format.js";
import { badge } from "../js/ui.js";

/**
 * A cell as `GET /api/v1/cells` gives it (CellOut); `GET /cells/{name}` adds `status` (the
 * cell's own StatusOut, null when it did not answer) and `node_names`.
 * @typedef {object} Cell
 * @property {string} name
 * @property {string} url
 * @property {boolean} disabled
 * @property {"up" | "unreachable" | "unknown"} state
 * @property {string | null} error
 * @property {string | null} checked_at
 * @property {number | null} latency_ms
 * @property {string | null} version
 * @property {string | null} database
 * @property {number | null} [weight_multiplier] how much its VMs prefer its nodes when moving
 *   between cells (null: the setting scheduler.cross_cell_weight_multiplier)
 * @property {number} nodes
 * @property {number} vms
 * @property {string} created_at
 * @property {CellStatus | null} [status]
 * @property {string[]} [node_names]
 */
/**
 * @typedef {object} CellStatus the part of StatusOut a cell page shows
 * @property {{total: number, connected: number}} nodes
 * @property {{total: number, by_status: Record<string, number>}} vms
 * @property {number} tasks_running
 * @property {boolean | null} [maintenance]
 */
/** @typedef {{cell: string, error: string}} Unreachable an entry of a gathered answer's `unreachable` */
/** @typedef {import("../js/dom.js").Child} Child */

export const CELLS_ROUTE = "#/cells";
/** What a column shows where a partial item (of a cell that did not answer) has nothing. */
export const MISSING = "–";

/** @param {string} name */
export function cellRoute(name) {
  return `#/cells/${encodeURIComponent(name)}`;
}

/** @param {string} name */
export function cellPath(name) {
  return `/cells/${encodeURIComponent(name)}`;
}

const CELL_TONES = /** @type {Record<string, string>} */ ({ up: "good", unreachable: "bad", unknown: "warn" });

/**
 * The tone of a cell's state: up good, unreachable bad, unknown (not checked yet) warn.
 * @param {string | null | undefined} state
 */
export function cellTone(state) {
  return (state && CELL_TONES[state]) || "idle";
}

/**
 * A cell's state badge, and a "disabled" one after it when it is.
 * @param {{state: string, disabled?: boolean}} cell
 */
export function cellState(cell) {
  return [badge(cell.state, cellTone(cell.state)), cell.disabled ? [" ", badge("disabled", "idle")] : null];
}

/**
 * "3.1 ms"; "–" when not measured.
 * @param {number | null | undefined} ms
 */
export function latencyText(ms) {
  return ms === null || ms === undefined ? MISSING : `${trim(Math.round(ms * 10) / 10)} ms`;
}

/** @param {number} n @param {string} one */
function count(n, one) {
  return `${n} ${one}${n === 1 ? "" : "s"}`;
}

/**
 * The cells table: name (a link), state (coloured), nodes, VMs, latency, database, URL,
 * error, and a last column of `actions(cell)` when given.
 * @param {Cell[]} cells
 * @param {((c: Cell) => Child) | null} [actions]
 */
export function cellTable(cells, actions = null) {
  /** @type {import("../js/dom.js").Column<Cell>[]} */
  const columns = [
    { title: "Name", field: "name", cell: (c) => link(cellRoute(c.name), c.name) },
    { title: "State", field: "state", cell: cellState },
    { title: "Nodes", field: "nodes", cell: (c) => String(c.nodes) },
    { title: "VMs", field: "vms", cell: (c) => String(c.vms) },
    { title: "Latency", field: "latency", cell: (c) => latencyText(c.latency_ms) },
    { title: "Database", field: "database", cell: (c) => c.database ?? MISSING },
    { title: "URL", field: "url", cell: (c) => h("code", null, c.url) },
    { title: "Error", field: "error", cell: (c) => c.error ?? "" },
  ];
  if (actions) columns.push({ title: "Actions", field: "actions", cell: actions });
  return table(
    columns,
    cells,
    (c) => ({ dataset: { testid: "cell-row", cell: c.name, state: c.state, disabled: c.disabled ? "true" : null } }),
    "No cells yet: add one with `bollard cell create` or the form above.",
  );
}

/**
 * A cell's facts: URL, state, whether it takes new VMs, its error, when it was checked and
 * how fast it answered, its version and database, its nodes and VMs, when it was added.
 * @param {Cell} c
 * @param {number} now
 */
export function cellFacts(c, now) {
  return facts([
    ["URL", h("code", null, c.url), "url"],
    ["State", cellState(c), "state"],
    ["New VMs", c.disabled ? "no: disabled (everything else works)" : "yes", "disabled"],
    ["Error", c.error, "error"],
    ["Checked", c.checked_at ? `${when(c.checked_at)} (${ago(c.checked_at, now)})` : "not yet", "checked_at"],
    ["Latency", latencyText(c.latency_ms), "latency"],
    ["Version", c.version ?? MISSING, "version"],
    ["Database", c.database ?? MISSING, "database"],
    ["Weight multiplier", weightText(c.weight_multiplier), "weight_multiplier"],
    ["Nodes", String(c.nodes), "nodes"],
    ["VMs", String(c.vms), "vms"],
    ["Added", when(c.created_at), "created_at"],
  ]);
}

/**
 * What a cell's own status says: nodes connected, VMs by status, tasks running, maintenance;
 * a line saying so when it did not answer.
 * @param {CellStatus | null | undefined} status
 */
export function cellStatusFacts(status) {
  if (!status) return h("p", { class: "muted", "data-field": "no-status" }, "The cell did not answer: no counts.");
  const statuses = Object.entries(status.vms.by_status ?? {})
    .filter(([, n]) => n > 0)
    .sort(([a], [b]) => a.localeCompare(b));
  return facts([
    ["Nodes connected", `${status.nodes.connected} / ${status.nodes.total}`, "nodes-connected"],
    [
      "VMs",
      [
        String(status.vms.total),
        statuses.length > 0
          ? h("ul", { class: "overview-counts" }, statuses.map(([s, n]) => h("li", { dataset: { status: s } }, badge(s, tone(s)), ` ${n}`)))
          : null,
      ],
      "vms-total",
    ],
    ["Tasks running", String(status.tasks_running), "tasks-running"],
    ["Maintenance", status.maintenance === null || status.maintenance === undefined ? null : status.maintenance ? "on" : "off", "maintenance"],
  ]);
}

/**
 * A cell's nodes, each a link to its node page.
 * @param {string[] | null | undefined} names
 */
export function nodeLinks(names) {
  if (!names || names.length === 0) return h("p", { class: "muted" }, "No nodes in this cell.");
  return h(
    "ul",
    { class: "overview-counts", "data-testid": "cell-node-list" },
    names.map((n) => h("li", { dataset: { node: n } }, link(`#/nodes/${encodeURIComponent(n)}`, n))),
  );
}

/** The setting a cell's weight multiplier overrides. */
export const WEIGHT_SETTING = "scheduler.cross_cell_weight_multiplier";

/**
 * A cell's weight multiplier: the number, "default" (null: the setting's), or null when the
 * answer has none (an older API server: no row).
 * @param {number | null | undefined} weight
 */
export function weightText(weight) {
  if (weight === undefined) return null;
  return weight === null ? "default" : String(weight);
}

/**
 * The weight part of the edit form's PATCH body: {} when unchanged; empty text is null (the
 * default); text that is not a number is sent as it is, for the server to say why.
 * @param {number | null | undefined} before
 * @param {string} text
 * @returns {{weight_multiplier?: number | string | null}}
 */
export function weightChange(before, text) {
  const typed = text.trim();
  const value = typed === "" ? null : Number.isFinite(Number(typed)) ? Number(typed) : typed;
  return value === (before ?? null) ? {} : { weight_multiplier: value };
}

/**
 * The confirmation before deleting a cell.
 * @param {Cell} c
 */
export function deleteCellText(c) {
  const mapped =
    c.nodes > 0 || c.vms > 0
      ? ` It still has ${count(c.nodes, "node")} and ${count(c.vms, "VM")}: the server refuses while any is mapped to it.`
      : "";
  return (
    `Delete cell ${c.name}? The API server forgets it and its token; the cell server itself, ` +
    `its database and its hosts are not touched.${mapped}`
  );
}

/**
 * The PATCH body of the edit form: the URL when changed, the token and the CA when typed
 * (empty: unchanged; neither is ever shown), `disabled` when changed; {} when nothing changed.
 * @param {Cell} before
 * @param {{url: string, token: string, ca_pem: string, disabled: boolean}} form
 * @returns {{url?: string, token?: string, ca_pem?: string, disabled?: boolean}}
 */
export function cellChanges(before, form) {
  /** @type {{url?: string, token?: string, ca_pem?: string, disabled?: boolean}} */
  const body = {};
  const url = form.url.trim();
  if (url !== before.url) body.url = url;
  if (form.token.trim()) body.token = form.token.trim();
  if (form.ca_pem.trim()) body.ca_pem = form.ca_pem.trim();
  if (form.disabled !== before.disabled) body.disabled = form.disabled;
  return body;
}

/**
 * The body of `POST /cells` from the create form (no CA: null, the system's trust).
 * @param {{name: string, url: string, token: string, ca_pem: string}} form
 */
export function cellCreateBody(form) {
  const ca = form.ca_pem.trim();
  return { name: form.name.trim(), url: form.url.trim(), token: form.token.trim(), ca_pem: ca || null };
}

/**
 * Whether a live event concerns the cell pages.
 * @param {{kind: string, data?: Record<string, any> | null}} e
 * @param {string} [name] one cell only
 */
export function concernsCell(e, name) {
  if (!e.kind.startsWith("cell.")) return false;
  return name === undefined || e.data?.cell === name || e.data?.name === name;
}

/**
 * Whether an item of a gathered list is a partial one: a VM or node of a cell that did not
 * answer (only its name, cell and status or health are known).
 * @param {any} item
 */
export function isPartial(item) {
  return Boolean(item && item.unreachable === true);
}

/**
 * The title of a partial item's name, saying why there is nothing more.
 * @param {{cell?: string | null}} item
 */
export function partialTitle(item) {
  return `cell ${item.cell ?? "?"} did not answer: only the name and cell are known`;
}

/**
 * A name that links to its page, or plain text (with why) for a partial item whose page
 * would fail.
 * @param {any} item
 * @param {string} route
 */
export function nameCell(item, route) {
  if (isPartial(item)) return h("span", { title: partialTitle(item), "data-partial": "true" }, item.name);
  return link(route, item.name);
}

/**
 * Columns that tolerate partial items: for a partial row every column but those of `keep`
 * shows "–" (its cell function is not called: it would read fields that are not there).
 * @template T
 * @param {import("../js/dom.js").Column<T>[]} columns
 * @param {string[]} keep the fields a partial item has (name, status, cell, ...)
 * @returns {import("../js/dom.js").Column<T>[]}
 */
export function tolerant(columns, keep) {
  const kept = new Set(keep);
  return columns.map((c) =>
    kept.has(c.field ?? "") ? c : { ...c, cell: (/** @type {T} */ row) => (isPartial(row) ? MISSING : c.cell(row)) },
  );
}

/**
 * Whether any item of a list names a cell (the answer of an API server): the lists show a
 * Cell column then.
 * @param {any[]} items
 */
export function hasCells(items) {
  return items.some((i) => typeof i?.cell === "string" && i.cell !== "");
}

/**
 * The Cell column of the VM and node tables: the cell's name as a link to its page.
 * @returns {import("../js/dom.js").Column<any>}
 */
export function cellColumn() {
  return { title: "Cell", field: "cell", cell: (row) => (row.cell ? link(cellRoute(row.cell), row.cell) : MISSING) };
}

/**
 * The columns with the Cell column after the one of field `after` when the rows name cells.
 * @param {import("../js/dom.js").Column<any>[]} columns
 * @param {any[]} rows
 * @param {string} [after]
 */
export function withCellColumn(columns, rows, after = "name") {
  if (!hasCells(rows)) return columns;
  const at = columns.findIndex((c) => c.field === after);
  const out = [...columns];
  out.splice(at < 0 ? out.length : at + 1, 0, cellColumn());
  return out;
}

/**
 * A "Cell" fact of a VM or node page, or nothing when the answer names no cell.
 * @param {{cell?: string | null}} item
 * @returns {[string, Child, string][]}
 */
export function cellFact(item) {
  return item.cell ? [["Cell", link(cellRoute(item.cell), item.cell), "cell"]] : [];
}

/**
 * The options of the create-VM form's Cell select: the server chooses, then each cell with
 * its state (a disabled cell, which takes no new VM, and a cell that is not up are named so).
 * @param {Cell[]} cells
 * @returns {{value: string, label: string, disabled: boolean}[]}
 */
export function cellOptions(cells) {
  return [
    { value: "", label: "the server chooses", disabled: false },
    ...[...cells]
      .sort((a, b) => a.name.localeCompare(b.name))
      .map((c) => ({
        value: c.name,
        label: `${c.name} (${c.disabled ? "disabled: no new VMs" : c.state}, ${count(c.nodes, "node")})`,
        disabled: c.disabled,
      })),
  ];
}

/**
 * Every cell, or null when the server has no cells (a plain server answers 404).
 * @param {import("../js/api.js").Api} api
 * @returns {Promise<Cell[] | null>}
 */
export async function listCells(api) {
  try {
    const answer = await api.get("/cells");
    return answer.items;
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) return null;
    throw err;
  }
}

/**
 * The server's mode from `GET /status`: "cells" for an API server, else "single" (a plain
 * server, or an older one whose status has no mode).
 * @param {{mode?: string | null} | null | undefined} status
 */
export function modeOf(status) {
  return status?.mode === "cells" ? "cells" : "single";
}

/**
 * Ask the server its mode (the nav's Cells link is shown in cells mode only); "single" when
 * the status cannot be read (the page that needs it says why).
 * @param {import("../js/api.js").Api} api
 * @returns {Promise<"cells" | "single">}
 */
export async function serverMode(api) {
  try {
    return modeOf(await api.get("/status"));
  } catch (err) {
    console.warn("the server's mode could not be read", err);
    return "single";
  }
}

/**
 * The overview's Cells card body: each cell of the status with its state and its error.
 * @param {{name: string, state: string, error?: string | null}[]} cells
 */
export function cellsCard(cells) {
  if (cells.length === 0) return h("p", { class: "muted" }, "No cells yet.");
  const up = cells.filter((c) => c.state === "up").length;
  return [
    h("div", { class: "big", "data-field": "cells-up" }, `${up} / ${cells.length}`),
    h("p", { class: "muted" }, "up"),
    h(
      "ul",
      { class: "overview-counts", "data-field": "cells" },
      cells.map((c) =>
        h(
          "li",
          { dataset: { cell: c.name, state: c.state }, title: c.error ?? null },
          link(cellRoute(c.name), c.name),
          " ",
          badge(c.state, cellTone(c.state)),
        ),
      ),
    ),
  ];
}

/**
 * The cells that did not answer, each once (the last error said for it), by name.
 * @param {Iterable<Unreachable[]>} lists
 * @returns {Unreachable[]}
 */
export function mergeUnreachable(lists) {
  /** @type {Map<string, string>} */
  const byCell = new Map();
  for (const list of lists) {
    for (const u of list) {
      if (u && typeof u.cell === "string") byCell.set(u.cell, String(u.error ?? ""));
    }
  }
  return [...byCell.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([cell, error]) => ({ cell, error }));
}

/**
 * The warning over a page whose lists miss what cells that did not answer hold: each cell
 * (a link to its page) with its error.
 * @param {Unreachable[]} unreachable
 */
export function unreachableWarning(unreachable) {
  const one = unreachable.length === 1;
  return [
    h(
      "p",
      null,
      badge(one ? "1 cell did not answer" : `${unreachable.length} cells did not answer`, "warn"),
      " ",
      `What ${one ? "it holds is" : "they hold is"} listed with status UNKNOWN and “–” where nothing is known; ` +
        "its pages answer again once the cell does.",
    ),
    h(
      "ul",
      null,
      unreachable.map((u) => h("li", { dataset: { cell: u.cell } }, link(cellRoute(u.cell), u.cell), `: ${u.error || "no answer"}`)),
    ),
  ];
}
