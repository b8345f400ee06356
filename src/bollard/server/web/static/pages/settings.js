// @ts-check
/** Settings (`#/settings`): every cluster setting with its value, default, what it accepts
 * and what it means. Admins (settings.write) change one in its row and save it (PUT
 * /settings/{key}); a refusal (a value out of range) is shown next to the row. Others see
 * the table read-only. Live: a change made elsewhere (event settings.changed) is shown at
 * once, except in a row being edited. */
import { pathOf } from "../js/api.js";
import { h, replace } from "../js/dom.js";
import { actionButton, debounce, messageOf, showError } from "../js/ui.js";
import { Loader, field } from "./ops_parts.js";
import { editor, shown } from "./settings_parts.js";

/** @typedef {import("./settings_parts.js").Setting} Setting */

/**
 * @param {import("../js/ui.js").Ctx} ctx
 */
export async function render(ctx) {
  const canWrite = ctx.can("settings.write");
  const filter = /** @type {HTMLInputElement} */ (
    h("input", { type: "search", name: "filter", placeholder: "key or meaning", autocomplete: "off", "data-testid": "settings-filter" })
  );
  const count = h("span", { class: "muted", "aria-live": "polite" });
  const body = h("tbody");
  const results = h(
    "div",
    { class: "table-wrap", "data-testid": "settings-results" },
    h(
      "table",
      null,
      h(
        "thead",
        null,
        h(
          "tr",
          null,
          ["Key", "Value", "Default", "Allowed", "Meaning", canWrite ? "" : null].map((t) => (t === null ? null : h("th", { scope: "col" }, t))),
        ),
      ),
      body,
    ),
  );
  replace(
    ctx.view,
    h(
      "div",
      { class: "ops-page" },
      h("h1", null, "Settings"),
      h(
        "p",
        { class: "muted" },
        canWrite
          ? "Cluster settings, shared by every server; a change takes effect at its next use."
          : "Cluster settings, shared by every server (only an admin changes them).",
      ),
      h("form", { class: "toolbar", role: "search", "aria-label": "Filter settings" }, field("Filter", filter), count),
      results,
    ),
  );

  /** @type {Map<string, {row: HTMLElement, setting: Setting, dirty: () => boolean}>} */
  const rows = new Map();
  const loader = new Loader(results);

  /** @param {Setting} s */
  function makeRow(s) {
    const changed = JSON.stringify(s.value) !== JSON.stringify(s.default);
    const attrs = { dataset: { testid: "setting-row", key: s.key, changed: changed ? "" : null } };
    const cells = [
      h("td", { dataset: { field: "key" } }, h("span", { class: "mono" }, s.key)),
      null,
      h("td", { dataset: { field: "default" } }, shown(s.default)),
      h("td", { dataset: { field: "allowed" } }, s.allowed || s.type),
      h("td", { dataset: { field: "help" } }, s.help),
    ];
    if (!canWrite) {
      cells[1] = h("td", { dataset: { field: "value" } }, h("span", { class: changed ? "warn-text" : null }, shown(s.value)));
      const row = h("tr", attrs, cells);
      return { row, setting: s, dirty: () => false };
    }
    const edit = editor(s);
    const error = h("p", { class: "field-error", "data-testid": "setting-error", role: "alert" });
    const row = h("tr", attrs);
    const save = /** @type {HTMLElement} */ (
      actionButton(
        ctx,
        "settings.write",
        "setting-save",
        "Save",
        async () => {
          error.textContent = "";
          try {
            const saved = await ctx.api.put(pathOf("settings", s.key), { value: edit.value() });
            const fresh = makeRow(saved);
            rows.set(s.key, fresh);
            row.replaceWith(fresh.row);
            fresh.row.dataset.saved = "";
            /** @type {HTMLElement | null} */ (fresh.row.querySelector("[data-testid=setting-input]"))?.focus();
          } catch (err) {
            error.textContent = messageOf(err);
            throw err; // and in the error bar
          }
        },
        { disabled: true, "aria-label": `Save ${s.key}` },
      )
    );
    const update = () => {
      const dirty = edit.dirty();
      if (dirty) {
        row.dataset.dirty = "";
        save.removeAttribute("disabled");
      } else {
        delete row.dataset.dirty;
        save.setAttribute("disabled", "");
      }
    };
    edit.input.addEventListener("input", update);
    edit.input.addEventListener("change", update);
    // Enter in the field saves it; Escape puts back the current value.
    edit.input.addEventListener("keydown", (e) => {
      const key = /** @type {KeyboardEvent} */ (e).key;
      if (key === "Enter" && edit.dirty()) {
        e.preventDefault();
        save.click();
      } else if (key === "Escape" && edit.dirty()) {
        const fresh = makeRow(s);
        rows.set(s.key, fresh);
        row.replaceWith(fresh.row);
        showError(null);
      }
    });
    cells[1] = h("td", { dataset: { field: "value" } }, h("div", { class: "setting-edit" }, edit.control), error);
    replace(row, cells, h("td", { dataset: { field: "save" } }, save));
    return { row, setting: s, dirty: () => edit.dirty() || error.textContent !== "" };
  }

  function applyFilter() {
    const text = filter.value.trim().toLowerCase();
    let visible = 0;
    for (const [key, { row }] of rows) {
      const help = row.querySelector("[data-field=help]")?.textContent ?? "";
      const show = !text || key.toLowerCase().includes(text) || help.toLowerCase().includes(text);
      row.hidden = !show;
      if (show) visible += 1;
    }
    count.textContent = `${visible} of ${rows.size}`;
  }

  /** @param {Setting[]} settings */
  function draw(settings) {
    const keys = new Set(settings.map((s) => s.key));
    for (const [key, { row }] of rows) {
      if (!keys.has(key)) {
        row.remove();
        rows.delete(key);
      }
    }
    /** @type {HTMLElement | null} */
    let previous = null;
    for (const s of settings) {
      const old = rows.get(s.key);
      let row;
      if (old && (old.dirty() || JSON.stringify(old.setting) === JSON.stringify(s))) {
        row = old.row; // unchanged, or being edited: leave it as it is (and its focus)
      } else {
        const fresh = makeRow(s);
        rows.set(s.key, fresh);
        if (old) old.row.replaceWith(fresh.row);
        row = fresh.row;
      }
      if (previous) previous.after(row);
      else if (body.firstChild !== row) body.prepend(row);
      previous = row;
    }
    applyFilter();
  }

  async function load() {
    await loader.run(
      () => ctx.api.get("/settings"),
      (settings) => draw(settings),
    );
  }

  filter.addEventListener("input", applyFilter);
  filter.form?.addEventListener("submit", (e) => e.preventDefault());
  const refresh = debounce(() => void load(), 300);
  ctx.onEvent((e) => {
    if (e.kind.startsWith("settings.") || e.kind.startsWith("cluster.") || e.kind === "stream.connected") refresh();
  });
  await load();
}
