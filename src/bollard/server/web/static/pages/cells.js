// @ts-check
/** `#/cells` (an API server's only): every cell with its state (coloured), nodes, VMs, the
 * latency and database of its last check, its URL and why it did not answer; for those with
 * cell.manage (admin) an "Add cell" form (name, URL, the cell server's admin token in a
 * password field, its CA) and a Delete button in each row (after a confirmation; the server
 * refuses a cell that still has nodes or VMs, and its one line is shown). Live: refreshed on
 * cell events and every 5 s (the API server checks its cells on its own). */
import { h, replace } from "../js/dom.js";
import { actionButton, confirmDialog } from "../js/ui.js";
import { cellCreateBody, cellPath, cellRoute, cellTable, concernsCell, deleteCellText, listCells } from "./cell_parts.js";
import { keepFresh, stillShown } from "./nodes_table.js";
import { actionForm, submit } from "./storage_forms.js";
import { labelled, redraw } from "./vm_common.js";

/**
 * @typedef {import("../js/ui.js").Ctx} Ctx
 * @typedef {import("./cell_parts.js").Cell} Cell
 */

/**
 * @param {Ctx} ctx
 */
export async function render(ctx) {
  const hash = window.location.hash;
  const count = h("span", { class: "muted", "data-testid": "cell-count", "aria-live": "polite" });
  const formBox = h("div");
  const tableBox = h("div", { "data-testid": "cells-table" });
  let refreshNow = () => Promise.resolve();

  const open = actionButton(
    ctx,
    "cell.manage",
    "cell-create-open",
    "Add cell",
    async () => {
      if (formBox.firstChild) {
        close();
        return;
      }
      const { form, focus } = cellCreateForm(ctx, (cell) => ctx.go(cellRoute(cell.name)), close);
      replace(formBox, form);
      open?.setAttribute("aria-expanded", "true");
      focus();
    },
    { class: "action primary", "aria-expanded": "false" },
  );

  function close() {
    replace(formBox);
    open?.setAttribute("aria-expanded", "false");
    open?.focus();
  }

  /** @param {Cell} c */
  const rowActions = (c) =>
    actionButton(
      ctx,
      "cell.manage",
      "cell-delete",
      "Delete",
      async () => {
        if (!(await confirmDialog(`Delete cell ${c.name}?`, deleteCellText(c), "Delete"))) return;
        await ctx.api.del(cellPath(c.name));
        await refreshNow();
      },
      { class: "action danger", value: c.name, "aria-label": `Delete cell ${c.name}` },
    );

  /** false: the server has no cells (a plain server answers 404) */
  let hasCells = true;

  async function load() {
    const cells = await listCells(ctx.api);
    if (cells === null) {
      hasCells = false;
      return;
    }
    const up = cells.filter((c) => c.state === "up").length;
    count.textContent = `${cells.length} cell${cells.length === 1 ? "" : "s"}, ${up} up`;
    redraw(tableBox, JSON.stringify(cells), () => cellTable(cells, ctx.can("cell.manage") ? rowActions : null));
  }

  await load();
  if (!stillShown(hash)) return;
  if (!hasCells) {
    replace(
      ctx.view,
      h("h1", null, "Cells"),
      h("p", { "data-testid": "no-cells" }, "This server has no cells: it is a plain server (`bollard server`), not an API server in front of cells (`bollard api`)."),
    );
    return;
  }
  replace(
    ctx.view,
    h(
      "div",
      { class: "storage-page" },
      h("div", { class: "page-head" }, h("h1", null, "Cells"), count, open),
      h(
        "p",
        { class: "muted" },
        "The cell servers behind this API server, each with its own database, nodes and VMs. " +
          "Lists gather from every cell; a cell that does not answer is named over them and its " +
          "VMs are shown with status UNKNOWN. A disabled cell takes no new VMs.",
      ),
      formBox,
      tableBox,
    ),
  );
  refreshNow = keepFresh(ctx, load, (e) => concernsCell(e), 5000);
}

/**
 * The add-cell form: name, URL, the cell server's admin token (a password field: it is
 * stored encrypted and never shown again) and its CA (PEM; empty: the system's trust).
 * `done(cell)` is called with the new cell.
 * @param {Ctx} ctx
 * @param {(cell: Cell) => void} done
 * @param {() => void} cancel
 */
export function cellCreateForm(ctx, done, cancel) {
  const name = h("input", { type: "text", name: "name", autocomplete: "off", spellcheck: "false", maxlength: 63 });
  const url = h("input", { type: "url", name: "url", autocomplete: "off", spellcheck: "false", placeholder: "https://cell1.example:8700" });
  const token = h("input", { type: "password", name: "token", autocomplete: "new-password", spellcheck: "false" });
  const ca = h("textarea", { name: "ca_pem", rows: 4, spellcheck: "false", placeholder: "-----BEGIN CERTIFICATE-----" });
  const value = (/** @type {HTMLElement} */ el) => /** @type {HTMLInputElement} */ (el).value;
  const form = actionForm(
    ctx,
    { testid: "cell-create-form", title: "Add a cell", permission: "cell.manage", action: "cell-create", label: "Add cell" },
    [
      labelled("name", "Name", name, "Letters, digits, '.', '_' and '-', starting with a letter or digit."),
      labelled("url", "URL", url, "Where the API server reaches the cell server."),
      labelled("token", "Token", token, "The cell server's admin token (its <data-dir>/admin.token): checked against the cell, stored encrypted, never shown again."),
      labelled("ca_pem", "CA certificate (PEM)", ca, "The CA of the cell server's certificate; empty: the system's trusted CAs."),
    ],
    async (f) => {
      const body = cellCreateBody({ name: value(name), url: value(url), token: value(token), ca_pem: value(ca) });
      done(await submit(ctx, f, "/cells", body));
    },
    cancel,
  );
  return { form, focus: () => name.focus() };
}
