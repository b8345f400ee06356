// @ts-check
/** `#/flavors`: every flavor (name, vCPUs, memory, root disk, how many VMs have it as their
 * current flavor, properties); for those with flavor.manage (admin) a "Create flavor" form
 * and a Delete button in each row (after a confirmation; the server refuses a flavor in use,
 * and its one line is shown). Live: refreshed on flavor and VM events, and every 10 s. */
import { h, replace } from "../js/dom.js";
import { memory } from "../js/format.js";
import { actionButton, confirmDialog } from "../js/ui.js";
import { keepFresh, stillShown } from "./nodes_table.js";
import { actionForm, submit } from "./storage_forms.js";
import { concernsFlavor, deleteFlavorText, flavorRoute, flavorTable, parseProperties } from "./flavor_parts.js";
import { labelled, redraw, showFieldErrors } from "./vm_common.js";
import { numberOf } from "./vm_create_parts.js";

/**
 * @typedef {import("../js/ui.js").Ctx} Ctx
 * @typedef {import("./flavor_parts.js").Flavor} Flavor
 */

/**
 * @param {Ctx} ctx
 */
export async function render(ctx) {
  const hash = window.location.hash;
  const count = h("span", { class: "muted", "data-testid": "flavor-count", "aria-live": "polite" });
  const formBox = h("div");
  const tableBox = h("div", { "data-testid": "flavors-table" });
  /** refresh now (after a deletion): keepFresh's, once the page is shown */
  let refreshNow = () => Promise.resolve();

  const open = actionButton(
    ctx,
    "flavor.manage",
    "flavor-create-open",
    "Create flavor",
    async () => {
      if (formBox.firstChild) {
        close();
        return;
      }
      const { form, focus } = flavorCreateForm(ctx, (flavor) => ctx.go(flavorRoute(flavor.name)), close);
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

  /** @param {Flavor} f */
  const rowActions = (f) =>
    actionButton(
      ctx,
      "flavor.manage",
      "flavor-delete",
      "Delete",
      async () => {
        if (!(await confirmDialog(`Delete flavor ${f.name}?`, deleteFlavorText(f.name, f.used_by), "Delete"))) return;
        await ctx.api.del(`/flavors/${encodeURIComponent(f.name)}`);
        await refreshNow();
      },
      { class: "action danger", value: f.name, "aria-label": `Delete flavor ${f.name}` },
    );

  async function load() {
    /** @type {Flavor[]} */
    const flavors = await ctx.api.all("/flavors");
    count.textContent = `${flavors.length} flavor${flavors.length === 1 ? "" : "s"}`;
    redraw(tableBox, JSON.stringify(flavors), () => flavorTable(flavors, ctx.can("flavor.manage") ? rowActions : null));
  }

  await load();
  if (!stillShown(hash)) return;
  replace(
    ctx.view,
    h(
      "div",
      { class: "storage-page" },
      h("div", { class: "page-head" }, h("h1", null, "Flavors"), count, open),
      h(
        "p",
        { class: "muted" },
        "Named sizes for VMs. A VM keeps its own copy of the flavor it was given, so changing or " +
          "deleting a flavor changes no VM; a resize gives a VM another flavor.",
      ),
      formBox,
      tableBox,
    ),
  );
  refreshNow = keepFresh(ctx, load, (e) => concernsFlavor(e), 10000);
}

/**
 * The create-flavor form: name, vCPUs, memory (MiB), root disk (MiB, 0: none), description
 * and properties as `key=value` lines. `done(flavor)` is called with the new flavor.
 * @param {Ctx} ctx
 * @param {(flavor: Flavor) => void} done
 * @param {() => void} cancel
 */
export function flavorCreateForm(ctx, done, cancel) {
  const name = h("input", { type: "text", name: "name", autocomplete: "off", spellcheck: "false", maxlength: 63 });
  const vcpus = h("input", { type: "number", name: "vcpus", value: 1, min: 1, max: 1024, step: 1 });
  const mem = h("input", { type: "number", name: "memory_mb", value: 1024, min: 16, step: 1 });
  const disk = h("input", { type: "number", name: "disk_mb", value: 0, min: 0, step: 1 });
  const description = h("input", { type: "text", name: "description", autocomplete: "off" });
  const properties = h("textarea", {
    name: "properties",
    rows: 4,
    spellcheck: "false",
    placeholder: "hw:cpu_policy=dedicated\ntier=gold",
  });
  const form = actionForm(
    ctx,
    { testid: "flavor-create-form", title: "Create a flavor", permission: "flavor.manage", action: "flavor-create", label: "Create flavor" },
    [
      labelled("name", "Name", name, "Letters, digits, '.', '_' and '-', starting with a letter or digit."),
      labelled("vcpus", "vCPUs", vcpus),
      sized(labelled("memory_mb", "Memory (MiB)", mem), mem),
      sized(labelled("disk_mb", "Root disk (MiB)", disk, "The VM's first disk (vda), made with it; 0: none."), disk),
      labelled("description", "Description", description),
      labelled("properties", "Properties", properties, "One key=value a line (for placement or the hypervisor)."),
    ],
    async (f) => {
      const parsed = parseProperties(/** @type {HTMLTextAreaElement} */ (properties).value);
      if (parsed.errors.length > 0) {
        showFieldErrors(f, parsed.errors.map((e) => /** @type {[string, string]} */ (["properties", e])));
        throw new Error(`properties: ${parsed.errors.join("; ")}`);
      }
      const body = {
        name: /** @type {HTMLInputElement} */ (name).value.trim(),
        vcpus: numberOf(/** @type {HTMLInputElement} */ (vcpus)),
        memory_mb: numberOf(/** @type {HTMLInputElement} */ (mem)),
        disk_mb: numberOf(/** @type {HTMLInputElement} */ (disk)) ?? 0,
        description: /** @type {HTMLInputElement} */ (description).value.trim() || null,
        properties: parsed.properties,
      };
      done(await submit(ctx, f, "/flavors", body));
    },
    cancel,
  );
  return { form, focus: () => name.focus() };
}

/**
 * A MiB field with its size spelled out as it is typed ("2048" → "2 GiB").
 * @param {HTMLElement} field the labelled field
 * @param {HTMLElement} input
 */
function sized(field, input) {
  const hint = h("small", { class: "muted", "aria-live": "polite" });
  const show = () => {
    const n = numberOf(/** @type {HTMLInputElement} */ (input));
    hint.textContent = n === undefined || n === 0 ? "" : `= ${memory(n)}`;
  };
  input.addEventListener("input", show);
  show();
  input.after(hint);
  return field;
}
