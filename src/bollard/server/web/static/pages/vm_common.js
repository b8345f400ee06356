// @ts-check
/** What the VM pages share: routes, the power operations (their labels, permissions and
 * requests), redrawing a part of a page only when what it shows changed (keeping keyboard
 * focus), and putting an API validation message next to the form fields it names. */
import { pathOf } from "../js/api.js";
import { h, replace } from "../js/dom.js";

/** The statuses the API derives (domain/states.py ApiStatus), for the status filter. */
export const STATUSES = [
  "ACTIVE",
  "BUILD",
  "SHUTOFF",
  "PAUSED",
  "MIGRATING",
  "RESIZE",
  "VERIFY_RESIZE",
  "REVERT_RESIZE",
  "REBOOT",
  "ERROR",
  "UNKNOWN",
];

/** @param {string} name */
export function vmRoute(name) {
  return `#/vms/${encodeURIComponent(name)}`;
}

/** @param {string} name */
export function nodeRoute(name) {
  return `#/nodes/${encodeURIComponent(name)}`;
}

/** @param {string} id */
export function taskRoute(id) {
  return `#/tasks/${encodeURIComponent(id)}`;
}

/**
 * @typedef {object} PowerOp a VM operation started by one request without a body
 * @property {"start" | "shutdown" | "stop" | "restart" | "delete"} op
 * @property {string} label
 * @property {string} permission the policy action
 * @property {string} done what the request did, for "N VMs ..."
 */

/** @type {PowerOp[]} */
export const POWER_OPS = [
  { op: "start", label: "Start", permission: "vm.power", done: "Starting" },
  { op: "shutdown", label: "Shut down", permission: "vm.power", done: "Shutting down" },
  { op: "stop", label: "Stop", permission: "vm.power", done: "Stopping" },
  { op: "restart", label: "Restart", permission: "vm.power", done: "Restarting" },
  { op: "delete", label: "Delete", permission: "vm.delete", done: "Deleting" },
];

/** What each operation does, as a tooltip. */
export const OP_HELP = /** @type {Record<string, string>} */ ({
  start: "Power the VM on.",
  shutdown: "Ask the guest to shut down cleanly (ACPI power button); it is forced off after the grace period.",
  stop: "Power the VM off at once, like pulling the plug.",
  restart: "Restart the VM.",
  delete: "Power the VM off, undefine it on its node and remove its record.",
});

/**
 * Send one operation's request for one VM; resolves to the API's answer ({vm, task}).
 * @param {import("../js/api.js").Api} api
 * @param {string} name
 * @param {PowerOp["op"]} op
 */
export function requestOp(api, name, op) {
  const path = pathOf("vms", name);
  return op === "delete" ? api.del(path) : api.post(`${path}/${op}`);
}

/**
 * The text of the confirmation before deleting VMs.
 * @param {string[]} names
 */
export function deleteText(names) {
  const what =
    names.length === 1
      ? `Delete VM ${names[0]}? It is powered off at once, undefined on its node and its record removed`
      : `Delete ${names.length} VMs: ${names.join(", ")}? Each is powered off at once, undefined on its node and its record removed`;
  return `${what}; its local disks and their data are destroyed. This cannot be undone.`;
}

/** @type {WeakMap<Element, string>} */
const drawn = new WeakMap();

/**
 * Redraw `el` with `build()` only when `signature` (e.g. the JSON of what it shows) differs
 * from the last drawing's, so live refreshes do not move the keyboard focus or a scroll
 * position for nothing. Focus inside `el` is put back on the same control after a redraw.
 * @param {Element} el
 * @param {string} signature
 * @param {() => import("../js/dom.js").Child | import("../js/dom.js").Child[]} build
 */
export function redraw(el, signature, build) {
  if (drawn.get(el) === signature) return;
  drawn.set(el, signature);
  const built = build();
  keepFocus(el, () => replace(el, ...(Array.isArray(built) ? built : [built])));
}

/** Attributes that identify a control across redraws. */
const IDENTITY = ["data-testid", "data-action", "name", "value", "href"];

/**
 * Run `fn` (which rebuilds `root`'s content) and refocus the control that had the focus.
 * @param {Element} root
 * @param {() => void} fn
 */
export function keepFocus(root, fn) {
  const active = document.activeElement;
  const selector = active && root.contains(active) ? selectorOf(active) : null;
  fn();
  if (!selector) return;
  const again = root.querySelector(selector);
  if (again instanceof HTMLElement) again.focus();
}

/** @param {Element} el */
function selectorOf(el) {
  const own = IDENTITY.map((a) => [a, el.getAttribute(a)])
    .filter(([, v]) => v !== null)
    .map(([a, v]) => `[${a}="${CSS.escape(String(v))}"]`)
    .join("");
  if (!own) return null;
  const row = el.closest("[data-vm], [data-task], [data-node]");
  if (!row || row === el) return el.tagName.toLowerCase() + own;
  const key = ["data-vm", "data-task", "data-node"].find((a) => row.hasAttribute(a)) ?? "";
  return `[${key}="${CSS.escape(row.getAttribute(key) ?? "")}"] ${el.tagName.toLowerCase()}${own}`;
}

/** A field path as the API names it: `name`, `disks[0].size_mb`, `request body`. */
const FIELD = /^([A-Za-z_][\w]*(?:\[\d+\])?(?:\.[A-Za-z_]\w*(?:\[\d+\])?)*): ([\s\S]*)$/;

/**
 * The parts of an API validation message that name a field ("name: must not be empty;
 * vcpus: must be at least 1"), as [field, reason] pairs; [] when it names none.
 * @param {string} message
 * @returns {[string, string][]}
 */
export function fieldErrors(message) {
  /** @type {[string, string][]} */
  const out = [];
  for (const part of message.split(/; (?=[A-Za-z_][\w.[\]]*: )/)) {
    const match = FIELD.exec(part);
    if (!match) return [];
    out.push([match[1], match[2]]);
  }
  return out;
}

/**
 * The place where a field's error is shown in a form: `<p class="field-error">` with
 * `data-error-for` = the field path (and the id the field's aria-describedby names).
 * @param {string} field
 */
export function errorSlot(field) {
  return h("p", { class: "field-error", id: errorId(field), dataset: { errorFor: field }, "aria-live": "polite", hidden: true });
}

/** @param {string} field */
export function errorId(field) {
  return `error-${field.replace(/[^\w-]/g, "_")}`;
}

/**
 * Show each [field, reason] next to its field in `form` (the nearest slot: the field's own,
 * else its parent's: `disks[0].size_mb` → `disks[0]` → `disks`); clear the others.
 * Returns how many were placed.
 * @param {HTMLElement} form
 * @param {[string, string][]} errors
 */
export function showFieldErrors(form, errors) {
  for (const slot of form.querySelectorAll(".field-error[data-error-for]")) {
    slot.textContent = "";
    /** @type {HTMLElement} */ (slot).hidden = true;
  }
  for (const input of form.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
  let placed = 0;
  for (const [field, reason] of errors) {
    const slot = slotFor(form, field);
    if (!slot) continue;
    // The slot's own field: just the reason; a part of it (a disk's size): that part named.
    const own = slot.dataset.errorFor ?? "";
    const part = field === own ? "" : field.slice(own.length).replace(/^\./, "");
    const line = part ? `${part}: ${reason}` : reason;
    slot.textContent = slot.textContent ? `${slot.textContent}; ${line}` : line;
    slot.hidden = false;
    placed += 1;
    const input = form.querySelector(`[name="${CSS.escape(field)}"]`);
    if (input) input.setAttribute("aria-invalid", "true");
  }
  return placed;
}

/**
 * @param {HTMLElement} form
 * @param {string} field
 * @returns {HTMLElement | null}
 */
function slotFor(form, field) {
  let path = field;
  for (;;) {
    const slot = form.querySelector(`.field-error[data-error-for="${CSS.escape(path)}"]`);
    if (slot instanceof HTMLElement) return slot;
    const cut = Math.max(path.lastIndexOf("."), path.lastIndexOf("["));
    if (cut <= 0) return null;
    path = path.slice(0, cut);
  }
}

/**
 * A labelled control with its error slot: `<div class="field"><label>…</label>control
 * <small>help</small><p class="field-error"></p></div>`.
 * @param {string} name the control's name (and error path)
 * @param {string} label
 * @param {HTMLElement} control
 * @param {string} [help]
 */
export function labelled(name, label, control, help) {
  const id = `f-${name.replace(/[^\w-]/g, "_")}`;
  control.id = id;
  const helpId = help ? `${id}-help` : null;
  control.setAttribute("aria-describedby", [helpId, errorId(name)].filter(Boolean).join(" "));
  return h(
    "div",
    { class: "field" },
    h("label", { for: id }, label),
    control,
    help ? h("small", { id: helpId, class: "muted" }, help) : null,
    errorSlot(name),
  );
}

/**
 * A <select> of [value, label] options with `current` selected.
 * @param {string} name
 * @param {[string, string][]} options
 * @param {string} current
 */
export function select(name, options, current) {
  return h(
    "select",
    { name },
    options.map(([value, label]) => h("option", { value, selected: value === current }, label)),
  );
}
