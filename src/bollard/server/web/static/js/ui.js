// @ts-check
/** Shared pieces of every page: the error line, confirmations, action buttons that only
 * appear for a role allowed to use them, and a debounce. */
import { h } from "./dom.js";

/**
 * Show one readable line in the error bar (null hides it).
 * @param {string | null} message
 */
export function showError(message) {
  const line = /** @type {HTMLElement} */ (document.getElementById("error"));
  line.textContent = message ?? "";
  line.hidden = !message;
}

/** A one-line message of any thrown value. @param {unknown} err */
export function messageOf(err) {
  if (err instanceof Error) return err.message.replace(/\s+/g, " ").trim();
  return String(err);
}

/**
 * Ask for confirmation in the page's <dialog>; resolves true for OK.
 * @param {string} title
 * @param {string} text what the action means, in full
 * @param {string} [ok] the OK button's label
 * @returns {Promise<boolean>}
 */
export function confirmDialog(title, text, ok = "OK") {
  const dialog = /** @type {HTMLDialogElement} */ (document.getElementById("confirm"));
  /** @type {HTMLElement} */ (dialog.querySelector("#confirm-title")).textContent = title;
  /** @type {HTMLElement} */ (dialog.querySelector("#confirm-text")).textContent = text;
  /** @type {HTMLElement} */ (dialog.querySelector("[data-testid=confirm-ok]")).textContent = ok;
  dialog.returnValue = "";
  dialog.showModal();
  /** @type {HTMLElement} */ (dialog.querySelector("[data-testid=confirm-cancel]")).focus();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
  });
}

/**
 * @typedef {object} Ctx what every page gets
 * @property {import("./api.js").Api} api
 * @property {HTMLElement} view where the page draws
 * @property {{user: string, role: string, actor: string, permissions: string[]}} me
 * @property {(action: string) => boolean} can whether the caller's role may do an action of the policy table
 * @property {(fn: (e: import("./live.js").BollardEvent) => void) => () => void} onEvent subscribe to live events until the page is left
 * @property {(fn: () => void, ms: number) => void} every run fn every ms until the page is left
 * @property {(route: string) => void} go navigate, e.g. go("#/vms/web1")
 * @property {() => void} refreshTasks refresh the task panel now
 */

/**
 * A button for an action of the policy table, or null when the caller may not do it (a
 * reader sees no action buttons; the server refuses the call anyway). While `run` works
 * the button is disabled; a failure is shown as one line in the error bar.
 * @param {Ctx} ctx
 * @param {string} permission the policy action, e.g. "vm.power"
 * @param {string} name the data-action hook, e.g. "vm-start"
 * @param {string} label
 * @param {() => Promise<unknown>} run
 * @param {Record<string, any>} [attrs]
 * @returns {HTMLElement | null}
 */
export function actionButton(ctx, permission, name, label, run, attrs = {}) {
  if (!ctx.can(permission)) return null;
  const button = h("button", { type: "button", class: "action", dataset: { action: name }, ...attrs }, label);
  button.addEventListener("click", async () => {
    button.setAttribute("disabled", "");
    button.setAttribute("aria-busy", "true");
    try {
      showError(null);
      await run();
      ctx.refreshTasks();
    } catch (err) {
      showError(messageOf(err));
    } finally {
      button.removeAttribute("disabled");
      button.removeAttribute("aria-busy");
    }
  });
  return button;
}

/**
 * Call `fn` at most once per `ms` (trailing): for refreshing a page on bursts of events.
 * @param {() => void} fn
 * @param {number} ms
 */
export function debounce(fn, ms) {
  /** @type {ReturnType<typeof setTimeout> | null} */
  let timer = null;
  return () => {
    if (timer !== null) return;
    timer = setTimeout(() => {
      timer = null;
      fn();
    }, ms);
  };
}

/**
 * A coloured state badge: `<span class="badge good" data-state="ACTIVE">ACTIVE</span>`.
 * @param {string | null | undefined} state
 * @param {string} tone
 */
export function badge(state, tone) {
  return h("span", { class: `badge ${tone}`, dataset: { state: state ?? "" } }, state ?? "–");
}

/**
 * A horizontal bar for used/total, with its text ("6 / 16 vCPU").
 * @param {number} fraction 0..1
 * @param {string} text
 * @param {string} [label] accessible name
 */
export function bar(fraction, text, label) {
  const pct = Math.round(fraction * 100);
  const level = pct >= 90 ? "bad" : pct >= 75 ? "warn" : "good";
  // (set through the CSSOM: the Content-Security-Policy refuses style attributes)
  const fill = h("div", { class: `fill ${level}` });
  fill.style.width = `${pct}%`;
  return h(
    "div",
    { class: "bar", role: "meter", "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": pct, "aria-label": label ?? text },
    fill,
    h("span", { class: "bar-text" }, text),
  );
}
