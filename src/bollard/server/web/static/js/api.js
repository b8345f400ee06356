// @ts-check
/** The REST API client: every call carries the token; every failure is an ApiError whose
 * message is one readable line (the server's own). */
import { errorLine } from "./format.js";

export const API = "/api/v1";

export class ApiError extends Error {
  /**
   * @param {number} status
   * @param {string} message
   * @param {string | null} code
   */
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export class Api {
  /** @param {string} token */
  constructor(token) {
    this.token = token;
    /** @type {() => void} called on 401 (the token stopped working) */
    this.onUnauthorized = () => {};
  }

  /**
   * @param {string} method
   * @param {string} path under /api/v1, e.g. "/vms"
   * @param {{query?: Record<string, any>, body?: any, signal?: AbortSignal}} [options]
   * @returns {Promise<any>}
   */
  async call(method, path, options = {}) {
    const url = new URL(API + path, window.location.origin);
    for (const [k, v] of Object.entries(options.query ?? {})) {
      if (v !== null && v !== undefined && v !== "") url.searchParams.set(k, String(v));
    }
    /** @type {Record<string, string>} */
    const headers = { Authorization: `Bearer ${this.token}`, Accept: "application/json" };
    /** @type {RequestInit} */
    const init = { method, headers, signal: options.signal, cache: "no-store" };
    if (options.body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(options.body);
    }
    let response;
    try {
      response = await fetch(url, init);
    } catch (err) {
      if (err instanceof DOMException && err.name === "AbortError") throw err;
      throw new ApiError(0, `the server at ${window.location.host} does not answer`, "unreachable");
    }
    const text = await response.text();
    let body = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch {
      // not JSON (a proxy's error page): the status alone says what happened
    }
    if (!response.ok) {
      if (response.status === 401) this.onUnauthorized();
      throw new ApiError(response.status, errorLine(response.status, body), body?.error?.code ?? null);
    }
    return body;
  }

  /** @param {string} path @param {Record<string, any>} [query] */
  get(path, query) {
    return this.call("GET", path, { query });
  }

  /** @param {string} path @param {any} [body] */
  post(path, body) {
    return this.call("POST", path, { body });
  }

  /** @param {string} path @param {any} body */
  patch(path, body) {
    return this.call("PATCH", path, { body });
  }

  /** @param {string} path @param {any} body */
  put(path, body) {
    return this.call("PUT", path, { body });
  }

  /** @param {string} path */
  del(path) {
    return this.call("DELETE", path);
  }

  /**
   * Every item of a paged list (`items` + `next_cursor`), up to `max` items.
   * @param {string} path
   * @param {Record<string, any>} [query]
   * @param {number} [max]
   * @returns {Promise<any[]>}
   */
  async all(path, query = {}, max = 5000) {
    const items = [];
    /** @type {string | null} */
    let cursor = null;
    do {
      const page = await this.get(path, { ...query, limit: 500, cursor });
      items.push(...page.items);
      cursor = page.next_cursor;
    } while (cursor && items.length < max);
    return items;
  }
}

/**
 * The path of a VM, node or task, with its name escaped.
 * @param {string} kind "vms", "nodes", "tasks"
 * @param {string} name
 */
export function pathOf(kind, name) {
  return `/${kind}/${encodeURIComponent(name)}`;
}
