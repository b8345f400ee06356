// @ts-check
/** Pieces shared by the operations pages (tasks, events, commands, reconcile, settings):
 * links to other pages, times, ids, JSON blocks, and a guard for loads that finish after
 * their page was left or overtaken by a newer load. */
import { h, link } from "../js/dom.js";
import { ago, when } from "../js/format.js";
import { messageOf, showError } from "../js/ui.js";

/** @typedef {import("../js/dom.js").Child} Child */

/** @param {string | null | undefined} name */
export function vmLink(name) {
  return name ? link(`#/vms/${encodeURIComponent(name)}`, name, { class: "nowrap" }) : null;
}

/** @param {string | null | undefined} name */
export function nodeLink(name) {
  return name ? link(`#/nodes/${encodeURIComponent(name)}`, name, { class: "nowrap" }) : null;
}

/**
 * @param {string | null | undefined} id
 * @param {string} [text] what the link says (default: the short id)
 */
export function taskLink(id, text) {
  return id ? link(`#/tasks/${encodeURIComponent(id)}`, text ?? shortId(id), { title: id, class: "mono" }) : null;
}

/**
 * @param {string | null | undefined} id
 * @param {string} [text]
 */
export function commandLink(id, text) {
  return id ? link(`#/commands/${encodeURIComponent(id)}`, text ?? shortId(id), { title: id, class: "mono" }) : null;
}

/**
 * The distinctive end of a time-ordered id: "…4915e2a7d046" (its start is the time, the
 * same for everything made in the same minute). The full id is in the title and the hooks.
 * @param {string} id
 */
export function shortId(id) {
  return id.length > 14 ? `…${id.slice(-12)}` : id;
}

/**
 * A time as local date and time, with "3 s ago" as its title.
 * @param {string | null | undefined} iso
 */
export function time(iso) {
  if (!iso) return h("span", { class: "muted" }, "–");
  return h("time", { datetime: iso, title: ago(iso, Date.now()) }, when(iso));
}

/**
 * A time of day to the millisecond, "22:03:11.232" (steps of one task are milliseconds
 * apart), with the full date and "ago" as its title.
 * @param {string | null | undefined} iso
 */
export function clock(iso) {
  if (!iso) return null;
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  const p = (/** @type {number} */ n, w = 2) => String(n).padStart(w, "0");
  const text = `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
  return h("time", { datetime: iso, title: `${when(iso)} (${ago(iso, Date.now())})` }, text);
}

/**
 * Pretty JSON in a <pre> (text, never markup).
 * @param {unknown} value
 * @param {Record<string, any>} [attrs]
 */
export function jsonBlock(value, attrs = {}) {
  const empty = value === null || value === undefined || (typeof value === "object" && Object.keys(value).length === 0);
  if (empty) return h("p", { class: "muted", ...attrs }, "(none)");
  return h("pre", { class: "json", ...attrs }, JSON.stringify(value, null, 2));
}

/**
 * JSON on one line, cut to `max` characters (the whole in the title).
 * @param {unknown} value
 * @param {number} [max]
 */
export function shortJson(value, max = 80) {
  if (value === null || value === undefined) return null;
  if (typeof value === "object" && Object.keys(value).length === 0) return null;
  const text = typeof value === "string" ? value : JSON.stringify(value);
  return h("span", { class: "mono", title: text.length > max ? text : null }, text.length > max ? `${text.slice(0, max - 1)}…` : text);
}

/**
 * Loads of a page: only the newest load's answer is drawn, and nothing is drawn (nor any
 * error shown) once the page's root has left the document (the operator went elsewhere).
 */
export class Loader {
  /** @param {HTMLElement} root an element of the page */
  constructor(root) {
    this.root = root;
    this.seq = 0;
  }

  /** Whether the page is still shown. */
  get alive() {
    return this.root.isConnected;
  }

  /**
   * Run `fetch`; hand its answer to `draw` if no newer load started meanwhile. A failure is
   * shown as one line (unless the page was left); `failed` (if given) is called with it.
   * @template T
   * @param {() => Promise<T>} fetch
   * @param {(value: T) => void} draw
   * @param {(err: unknown) => void} [failed]
   * @returns {Promise<boolean>} whether it drew
   */
  async run(fetch, draw, failed) {
    if (!this.alive) return false;
    const mine = ++this.seq;
    let value;
    try {
      value = await fetch();
    } catch (err) {
      if (mine !== this.seq || !this.alive) return false;
      if (failed) failed(err);
      else showError(messageOf(err));
      return false;
    }
    if (mine !== this.seq || !this.alive) return false;
    draw(value);
    return true;
  }
}

/**
 * A labelled input for a filter toolbar (label wraps the control: one click target).
 * @param {string} label
 * @param {HTMLElement} control
 */
export function field(label, control) {
  return h("label", { class: "filter" }, h("span", null, label), control);
}
