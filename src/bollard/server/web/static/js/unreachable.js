// @ts-check
/** The warning over every page whose answers say that cells did not answer: an API server's
 * gathered lists (`GET /vms`, `/nodes`, `/tasks`, `/events`, ...) and its status carry
 * `unreachable: [{cell, error}]`. Every GET answer is looked at; the warning names each cell
 * of the latest answer of each path read since the page was shown, so it goes once the
 * cells answer again, and a new page starts with none. */
import { replace } from "./dom.js";
import { mergeUnreachable, unreachableWarning } from "../pages/cell_parts.js";

/** @typedef {import("../pages/cell_parts.js").Unreachable} Unreachable */

export class UnreachableWatch {
  /** @param {HTMLElement} el where the warning is drawn (hidden while there is none) */
  constructor(el) {
    this.el = el;
    /** @type {Map<string, Unreachable[]>} the last non-empty `unreachable` of each path */
    this.byPath = new Map();
    /** bumped by reset(): an answer to a request sent before it is the last page's */
    this.epoch = 0;
    /** what is drawn, to draw only when it changes */
    this.drawn = "";
  }

  /** A new page: no warning until its own answers say so. */
  reset() {
    this.epoch += 1;
    this.byPath.clear();
    this.draw();
  }

  /**
   * Take note of an answer to `GET path` (the query is not part of the key: a refresh of a
   * filtered list replaces the last answer of its path).
   * @param {string} path
   * @param {any} body
   */
  note(path, body) {
    if (!body || typeof body !== "object" || !Array.isArray(body.unreachable)) return;
    const key = path.split("?")[0];
    if (body.unreachable.length === 0) this.byPath.delete(key);
    else this.byPath.set(key, body.unreachable);
    this.draw();
  }

  /** The cells that did not answer, each once, by name. */
  cells() {
    return mergeUnreachable(this.byPath.values());
  }

  draw() {
    const cells = this.cells();
    const signature = JSON.stringify(cells);
    if (signature === this.drawn) return;
    this.drawn = signature;
    this.el.hidden = cells.length === 0;
    replace(this.el, cells.length === 0 ? [] : unreachableWarning(cells));
  }

  /**
   * Look at every GET answer of `api` from now on (an answer to a request sent before the
   * last reset() is the page left behind's, and is not looked at).
   * @param {import("./api.js").Api} api
   */
  observe(api) {
    const call = api.call.bind(api);
    /** @type {typeof api.call} */
    api.call = async (method, path, options) => {
      const epoch = this.epoch;
      const body = await call(method, path, options);
      if (method === "GET" && epoch === this.epoch) this.note(path, body);
      return body;
    };
  }
}
