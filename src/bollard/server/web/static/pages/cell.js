// @ts-check
/** `#/cells/NAME` (an API server's only): one cell: its URL, state (coloured), error, last
 * check and latency, version and database, nodes and VMs; its own status counts (nodes
 * connected, VMs by status, tasks running; none when it did not answer); its nodes, each a
 * link to its node page; its weight multiplier for moves between cells ("default": the
 * setting's). For cell.manage (admin): Edit (URL, token, CA, disabled, weight multiplier:
 * empty for the default; only what changed or was typed is sent, the token and the CA are
 * never shown) and Delete (after a
 * confirmation; the server refuses a cell that still has nodes or VMs). Live: refreshed on
 * the cell's events and every 5 s. */
import { ApiError } from "../js/api.js";
import { h, link, replace } from "../js/dom.js";
import { actionButton, confirmDialog } from "../js/ui.js";
import {
  CELLS_ROUTE,
  WEIGHT_SETTING,
  cellChanges,
  cellFacts,
  cellPath,
  cellState,
  cellStatusFacts,
  concernsCell,
  deleteCellText,
  nodeLinks,
  weightChange,
} from "./cell_parts.js";
import { keepFresh, stillShown } from "./nodes_table.js";
import { actionForm } from "./storage_forms.js";
import { fieldErrors, labelled, redraw, showFieldErrors } from "./vm_common.js";

/** @typedef {import("./cell_parts.js").Cell} Cell */

/**
 * @param {import("../js/ui.js").Ctx} ctx
 * @param {{name: string}} params
 */
export async function render(ctx, params) {
  const hash = window.location.hash;
  const name = params.name;
  const path = cellPath(name);
  /** @type {Cell | null} */
  let cell = null;
  let gone = false;
  let refreshNow = () => Promise.resolve();

  const headState = h("span", { "data-testid": "cell-state" });
  const title = h("h1", null, `Cell ${name}`, " ", headState);
  const goneNote = h("p", { "data-testid": "cell-gone", hidden: true }, `There is no cell ${name} (any more).`);
  const actions = h("div", { class: "toolbar", role: "group", "aria-label": "Actions" });
  const editBox = h("div");
  const factsBox = h("section", { class: "card", "data-testid": "cell-facts", "aria-labelledby": "cell-facts-h" });
  const statusBox = h("section", { class: "card", "data-testid": "cell-status", "aria-labelledby": "cell-status-h" });
  const nodesTitle = h("h2", { id: "cell-nodes-h" }, "Nodes");
  const nodesBox = h("div", { "data-testid": "cell-nodes" });

  const edit = actionButton(
    ctx,
    "cell.manage",
    "cell-edit",
    "Edit",
    async () => {
      if (editBox.firstChild) closeEdit();
      else openEdit();
    },
    { "aria-expanded": "false" },
  );
  const remove = actionButton(
    ctx,
    "cell.manage",
    "cell-delete",
    "Delete",
    async () => {
      if (!cell || !(await confirmDialog(`Delete cell ${name}?`, deleteCellText(cell), "Delete"))) return;
      await ctx.api.del(path);
      ctx.go(CELLS_ROUTE);
    },
    { class: "action danger" },
  );
  replace(actions, edit, remove);
  actions.hidden = edit === null && remove === null;

  function closeEdit() {
    replace(editBox);
    edit?.setAttribute("aria-expanded", "false");
    edit?.focus();
  }

  function openEdit() {
    if (!cell) return;
    const before = cell;
    const url = h("input", { type: "url", name: "url", autocomplete: "off", spellcheck: "false", value: before.url });
    const token = h("input", { type: "password", name: "token", autocomplete: "new-password", spellcheck: "false" });
    const ca = h("textarea", { name: "ca_pem", rows: 4, spellcheck: "false", placeholder: "-----BEGIN CERTIFICATE-----" });
    const disabled = h("input", { type: "checkbox", name: "disabled", id: "f-cell-disabled", checked: before.disabled });
    const weight = h("input", {
      type: "text",
      name: "weight_multiplier",
      inputmode: "decimal",
      autocomplete: "off",
      spellcheck: "false",
      placeholder: "default",
      value: before.weight_multiplier ?? "",
    });
    const note = h("span", { class: "muted", "aria-live": "polite", "data-testid": "cell-edit-note" });
    const value = (/** @type {HTMLElement} */ el) => /** @type {HTMLInputElement} */ (el).value;
    const form = actionForm(
      ctx,
      { testid: "cell-edit-form", title: `Edit cell ${name}`, permission: "cell.manage", action: "cell-save", label: "Save" },
      [
        labelled("url", "URL", url),
        labelled("token", "New token", token, "Empty: unchanged. The cell server's admin token; never shown."),
        labelled("ca_pem", "New CA certificate (PEM)", ca, "Empty: unchanged."),
        h("label", { class: "check", for: "f-cell-disabled" }, disabled, "Disabled (takes no new VMs; everything else works)"),
        labelled(
          "weight_multiplier",
          "Weight multiplier",
          weight,
          `How much its VMs prefer its nodes when they move between cells; negative drains the cell. Empty: the default (the setting ${WEIGHT_SETTING}).`,
        ),
      ],
      async (f) => {
        const body = {
          ...cellChanges(before, {
            url: value(url),
            token: value(token),
            ca_pem: value(ca),
            disabled: /** @type {HTMLInputElement} */ (disabled).checked,
          }),
          ...(before.weight_multiplier === undefined ? {} : weightChange(before.weight_multiplier, value(weight))),
        };
        showFieldErrors(f, []);
        if (Object.keys(body).length === 0) {
          note.textContent = "Nothing changed.";
          return;
        }
        note.textContent = "";
        try {
          await ctx.api.patch(path, body);
        } catch (err) {
          if (err instanceof ApiError) showFieldErrors(f, fieldErrors(err.message));
          throw err;
        }
        closeEdit();
        await refreshNow();
      },
      closeEdit,
    );
    /** @type {HTMLElement} */ (form.querySelector(".toolbar")).append(note);
    replace(editBox, form);
    edit?.setAttribute("aria-expanded", "true");
    url.focus();
  }

  async function load() {
    if (gone) return;
    /** @type {Cell} */
    let current;
    try {
      current = await ctx.api.get(path);
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) {
        gone = true;
        replace(actions);
        replace(editBox);
        actions.hidden = true;
        goneNote.hidden = false;
        return;
      }
      throw err;
    }
    cell = current;
    const now = Date.now();
    redraw(headState, JSON.stringify([current.state, current.disabled]), () => cellState(current));
    headState.dataset.state = current.state;
    redraw(factsBox, JSON.stringify([current, Math.round(now / 5000)]), () => [
      h("h2", { id: "cell-facts-h" }, "Cell"),
      cellFacts(current, now),
    ]);
    redraw(statusBox, JSON.stringify(current.status ?? null), () => [
      h("h2", { id: "cell-status-h" }, "Its own status"),
      cellStatusFacts(current.status),
    ]);
    const names = current.node_names ?? [];
    nodesTitle.textContent = `Nodes (${names.length})`;
    redraw(nodesBox, JSON.stringify(names), () => nodeLinks(names));
  }

  await load();
  if (!stillShown(hash)) return;
  replace(
    ctx.view,
    h(
      "div",
      { class: "storage-page" },
      title,
      goneNote,
      actions,
      editBox,
      h("div", { class: "columns" }, factsBox, statusBox),
      h("section", { "aria-labelledby": "cell-nodes-h" }, nodesTitle, nodesBox),
      h("p", null, link(CELLS_ROUTE, "All cells")),
    ),
  );
  refreshNow = keepFresh(ctx, load, (e) => concernsCell(e, name), 5000);
}
