// @ts-check
/** The create forms of the storage pages: a pool (`POST /pools`, permission pool.manage) and
 * a volume (`POST /volumes`, volume.manage), and the pool-and-node choice that the volume
 * form, the copy form and the migrate form share (a node is asked for only where the pool
 * is local). The forms do not judge the values: the API does, and its message is shown as
 * one line and each part of it next to the field it names. */
import { ApiError } from "../js/api.js";
import { h, replace } from "../js/dom.js";
import { memory } from "../js/format.js";
import { actionButton } from "../js/ui.js";
import { fieldErrors, labelled, select, showFieldErrors } from "./vm_common.js";
import { UNITS, poolNodes, sizeMb } from "./storage_parts.js";

/**
 * @typedef {import("../js/ui.js").Ctx} Ctx
 * @typedef {import("./storage_parts.js").Pool} Pool
 */

/**
 * Submit `body` to `path`; on a validation error, put its parts next to the fields of
 * `form` (and show the whole line in the error bar, through actionButton).
 * @param {Ctx} ctx
 * @param {HTMLElement} form
 * @param {string} path
 * @param {any} body
 */
export async function submit(ctx, form, path, body) {
  showFieldErrors(form, []);
  try {
    return await ctx.api.post(path, body);
  } catch (err) {
    if (err instanceof ApiError) showFieldErrors(form, fieldErrors(err.message));
    throw err;
  }
}

/**
 * A form with its submit button (an action of `permission`) and a Cancel button.
 * @param {Ctx} ctx
 * @param {{testid: string, title: string, permission: string, action: string, label: string}} what
 * @param {HTMLElement[]} fields
 * @param {(form: HTMLElement) => Promise<void>} run
 * @param {() => void} cancel
 */
export function actionForm(ctx, what, fields, run, cancel) {
  const titleId = `${what.testid}-title`;
  const form = h(
    "form",
    { class: "card storage-form stack", "data-testid": what.testid, "aria-labelledby": titleId, novalidate: true },
    h("h2", { id: titleId }, what.title),
    fields,
  );
  const ok = actionButton(ctx, what.permission, what.action, what.label, () => run(form), {
    type: "submit",
    class: "action primary",
  });
  const close = h("button", { type: "button", "data-testid": `${what.testid}-cancel` }, "Cancel");
  close.addEventListener("click", cancel);
  // Enter in a field submits through the button (which shows the API's answer).
  form.addEventListener("submit", (e) => e.preventDefault());
  form.addEventListener("keydown", (e) => {
    if (e.key === "Escape") cancel();
  });
  form.append(h("div", { class: "toolbar" }, ok, close));
  return form;
}

/**
 * A size field: a number and its unit (MiB, GiB, TiB).
 * @param {string} name the API's field name (size_mb)
 * @param {string} label
 * @param {number | null} [currentMb] the size it starts at (a grow)
 */
export function sizeField(name, label, currentMb) {
  const gib = currentMb ? currentMb / 1024 : 10;
  const unit = Number.isInteger(gib) || !currentMb ? "GiB" : "MiB";
  const number = h("input", {
    type: "number",
    name,
    min: 1,
    step: "any",
    inputmode: "decimal",
    value: unit === "GiB" ? gib : currentMb,
    "data-testid": `${name}-input`,
  });
  const units = select(`${name}_unit`, Object.keys(UNITS).map((u) => [u, u]), unit);
  units.setAttribute("aria-label", `${label} unit`);
  units.dataset.testid = `${name}-unit`;
  const root = labelled(name, label, number);
  /** @type {HTMLElement} */ (root.querySelector("label")).after(h("span", { class: "size-field" }, number, units));
  return {
    root,
    /** The size in MiB (undefined: left empty, for the API to refuse). */
    value() {
      return sizeMb(/** @type {HTMLInputElement} */ (number).value, /** @type {HTMLSelectElement} */ (units).value);
    },
  };
}

/**
 * A pool select and a node select that is shown only for a local pool (whose volumes live
 * on one host), listing the pool's nodes.
 * @param {Pool[]} pools
 * @param {string[]} nodes every node's name
 * @param {{prefix?: string, current?: string, exclude?: string | null, help?: string}} [options]
 *   prefix: of the field names ("" gives `pool`, `node`); current: the pool chosen first;
 *   exclude: a pool left out of the choice (a migration's source)
 */
export function poolAndNode(pools, nodes, options = {}) {
  const prefix = options.prefix ?? "";
  const shown = pools.filter((p) => p.name !== options.exclude);
  const first = shown.find((p) => p.name === options.current)?.name ?? shown[0]?.name ?? "";
  const pool = select(`${prefix}pool`, shown.map((p) => [p.name, `${p.name} (${p.type}${freeText(p)})`]), first);
  pool.dataset.testid = `${prefix}pool-select`;
  const node = h("select", { name: `${prefix}node`, "data-testid": `${prefix}node-select` });
  const nodeField = labelled(`${prefix}node`, "Node", node, "The host that keeps it (a local pool's volume lives on one host).");
  const chosen = () => shown.find((p) => p.name === /** @type {HTMLSelectElement} */ (pool).value) ?? null;
  const fill = () => {
    const p = chosen();
    const local = p !== null && p.type === "local";
    nodeField.hidden = !local;
    const previous = /** @type {HTMLSelectElement} */ (node).value;
    const names = p ? poolNodes(p, nodes) : [];
    replace(
      node,
      h("option", { value: "" }, "the server chooses"),
      names.map((n) => h("option", { value: n, selected: n === previous }, n)),
    );
  };
  pool.addEventListener("change", fill);
  fill();
  return {
    root: [labelled(`${prefix}pool`, "Pool", pool, options.help), nodeField],
    /** {pool, node} for the request body (node null for a shared pool or when left to the server). */
    value() {
      const p = chosen();
      const picked = /** @type {HTMLSelectElement} */ (node).value;
      return { pool: p?.name ?? "", node: p?.type === "local" && picked ? picked : null };
    },
  };
}

/** @param {Pool} p */
function freeText(p) {
  return p.free_mb === null || p.free_mb === undefined ? "" : `, ${memory(p.free_mb)} free`;
}

/**
 * The create-pool form: name, type, path, the nodes it is on (none ticked: every node) and
 * a description. `done(pool)` is called with the new pool.
 * @param {Ctx} ctx
 * @param {string[]} nodes every node's name
 * @param {(pool: Pool) => void} done
 * @param {() => void} cancel
 */
export function poolCreateForm(ctx, nodes, done, cancel) {
  const name = h("input", { type: "text", name: "name", autocomplete: "off", spellcheck: "false", maxlength: 63 });
  const type = select("type", [["local", "local (each host its own directory)"], ["shared", "shared (one directory every host mounts)"]], "local");
  const path = h("input", { type: "text", name: "path", autocomplete: "off", spellcheck: "false", placeholder: "/srv/bollard/pool" });
  const description = h("input", { type: "text", name: "description", autocomplete: "off" });
  const boxes = nodes.map((n) =>
    h("label", { class: "check" }, h("input", { type: "checkbox", name: "nodes", value: n }), n),
  );
  const form = actionForm(
    ctx,
    { testid: "pool-create-form", title: "Create a pool", permission: "pool.manage", action: "pool-create", label: "Create pool" },
    [
      labelled("name", "Name", name, "Lower-case letters, digits, '_' and '-', starting with a letter or digit."),
      labelled("type", "Type", type),
      labelled("path", "Path", path, "An absolute directory on the hosts. A local pool may leave it empty: each host's default storage directory. A shared pool needs the same mounted directory on each of its nodes."),
      h(
        "fieldset",
        null,
        h("legend", null, "Nodes"),
        h("p", { class: "muted" }, "The hosts that have it; none ticked: every node, including nodes enrolled later."),
        h("div", { class: "checks" }, boxes),
        h("p", { class: "field-error", id: "error-nodes", dataset: { errorFor: "nodes" }, hidden: true }),
      ),
      labelled("description", "Description", description),
    ],
    async (f) => {
      const ticked = [...f.querySelectorAll("input[name=nodes]:checked")].map((b) => /** @type {HTMLInputElement} */ (b).value);
      const body = {
        name: /** @type {HTMLInputElement} */ (name).value.trim(),
        type: /** @type {HTMLSelectElement} */ (type).value,
        path: /** @type {HTMLInputElement} */ (path).value.trim() || null,
        nodes: ticked.length > 0 ? ticked : null,
        description: /** @type {HTMLInputElement} */ (description).value.trim() || null,
      };
      done(await submit(ctx, f, "/pools", body));
    },
    cancel,
  );
  return { form, focus: () => name.focus() };
}

/**
 * The create-volume form: name, size, pool, node (local pools) and format. `done(answer)`
 * is called with the API's answer ({volume, task}).
 * @param {Ctx} ctx
 * @param {Pool[]} pools
 * @param {string[]} nodes
 * @param {(answer: {volume: any, task: any}) => void} done
 * @param {() => void} cancel
 */
export function volumeCreateForm(ctx, pools, nodes, done, cancel) {
  const name = h("input", { type: "text", name: "name", autocomplete: "off", spellcheck: "false", maxlength: 63 });
  const size = sizeField("size_mb", "Size");
  const where = poolAndNode(pools, nodes);
  const format = select("format", [["qcow2", "qcow2 (thin: takes room as it is written)"], ["raw", "raw (all its room at once)"]], "qcow2");
  const form = actionForm(
    ctx,
    { testid: "volume-create-form", title: "Create a volume", permission: "volume.manage", action: "volume-create", label: "Create volume" },
    [
      labelled("name", "Name", name, "Letters, digits, '.', '_' and '-', starting with a letter or digit."),
      size.root,
      where.root,
      labelled("format", "Format", format),
    ],
    async (f) => {
      const body = {
        name: /** @type {HTMLInputElement} */ (name).value.trim(),
        size_mb: size.value(),
        ...where.value(),
        format: /** @type {HTMLSelectElement} */ (format).value,
      };
      done(await submit(ctx, f, "/volumes", body));
    },
    cancel,
  );
  return { form, focus: () => name.focus() };
}
