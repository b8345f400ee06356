// @ts-check
/** `#/flavors/NAME`: one flavor: its size, description, how many VMs have it as their current
 * flavor, its properties; for flavor.manage (admin) an Edit form for the description and
 * the properties (`PATCH /flavors/{name}`: only what changed is sent; the size never
 * changes) and Delete (after a confirmation; the server refuses a flavor in use). Live:
 * refreshed on flavor and VM events, and every 10 s. */
import { ApiError } from "../js/api.js";
import { h, link, replace } from "../js/dom.js";
import { actionButton, confirmDialog } from "../js/ui.js";
import { keepFresh, stillShown } from "./nodes_table.js";
import { actionForm } from "./storage_forms.js";
import {
  FLAVORS_ROUTE,
  concernsFlavor,
  deleteFlavorText,
  flavorFacts,
  parseProperties,
  propertiesTable,
  propertiesText,
  propertyChanges,
} from "./flavor_parts.js";
import { fieldErrors, labelled, redraw, showFieldErrors } from "./vm_common.js";

/** @typedef {import("./flavor_parts.js").Flavor} Flavor */

/**
 * @param {import("../js/ui.js").Ctx} ctx
 * @param {{name: string}} params
 */
export async function render(ctx, params) {
  const hash = window.location.hash;
  const name = params.name;
  const path = `/flavors/${encodeURIComponent(name)}`;
  /** @type {Flavor | null} */
  let flavor = null;
  let gone = false;
  let refreshNow = () => Promise.resolve();

  const title = h("h1", null, `Flavor ${name}`);
  const goneNote = h("p", { "data-testid": "flavor-gone", hidden: true }, `There is no flavor ${name} (any more).`);
  const actions = h("div", { class: "toolbar", role: "group", "aria-label": "Actions" });
  const editBox = h("div");
  const factsBox = h("section", { class: "card", "data-testid": "flavor-facts", "aria-labelledby": "flavor-facts-h" });
  const propsBox = h("div", { "data-testid": "flavor-properties" });

  const edit = actionButton(
    ctx,
    "flavor.manage",
    "flavor-edit",
    "Edit",
    async () => {
      if (editBox.firstChild) closeEdit();
      else openEdit();
    },
    { "aria-expanded": "false" },
  );
  const remove = actionButton(
    ctx,
    "flavor.manage",
    "flavor-delete",
    "Delete",
    async () => {
      const ok = await confirmDialog(`Delete flavor ${name}?`, deleteFlavorText(name, flavor?.used_by ?? 0), "Delete");
      if (!ok) return;
      await ctx.api.del(path);
      ctx.go(FLAVORS_ROUTE);
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
    if (!flavor) return;
    const before = flavor;
    const description = h("input", { type: "text", name: "description", autocomplete: "off", value: before.description ?? "" });
    const properties = h("textarea", { name: "properties", rows: 6, spellcheck: "false" });
    /** @type {HTMLTextAreaElement} */ (properties).value = propertiesText(before.properties);
    const note = h("span", { class: "muted", "aria-live": "polite", "data-testid": "flavor-edit-note" });
    const form = actionForm(
      ctx,
      { testid: "flavor-edit-form", title: `Edit flavor ${name}`, permission: "flavor.manage", action: "flavor-save", label: "Save" },
      [
        h("p", { class: "muted" }, "The size of a flavor never changes (VMs keep their own copy); make another flavor for another size."),
        labelled("description", "Description", description),
        labelled("properties", "Properties", properties, "One key=value a line; a line removed unsets its key."),
      ],
      async (f) => {
        const parsed = parseProperties(/** @type {HTMLTextAreaElement} */ (properties).value);
        showFieldErrors(f, []);
        if (parsed.errors.length > 0) {
          showFieldErrors(f, parsed.errors.map((e) => /** @type {[string, string]} */ (["properties", e])));
          throw new Error(`properties: ${parsed.errors.join("; ")}`);
        }
        /** @type {Record<string, any>} */
        const body = propertyChanges(before.properties ?? {}, parsed.properties);
        const text = /** @type {HTMLInputElement} */ (description).value.trim() || null;
        if (text !== (before.description || null)) body.description = text;
        if (Object.keys(body).length === 0) {
          note.textContent = "Nothing changed.";
          return;
        }
        note.textContent = "";
        try {
          flavor = await ctx.api.patch(path, body);
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
    description.focus();
  }

  async function load() {
    if (gone) return;
    /** @type {Flavor} */
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
    flavor = current;
    redraw(factsBox, JSON.stringify(current), () => [h("h2", { id: "flavor-facts-h" }, "Flavor"), flavorFacts(current)]);
    redraw(propsBox, JSON.stringify(current.properties), () => propertiesTable(current.properties));
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
      factsBox,
      h("section", { "aria-labelledby": "flavor-props-h" }, h("h2", { id: "flavor-props-h" }, "Properties"), propsBox),
      h("p", null, link(FLAVORS_ROUTE, "All flavors")),
    ),
  );
  refreshNow = keepFresh(ctx, load, (e) => concernsFlavor(e, name), 10000);
}
