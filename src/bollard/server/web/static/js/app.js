// @ts-check
/** The console's entry point: log in with a token, then route `#/...` to a page module.
 *
 * A page module exports `render(ctx, params)`: it draws into `ctx.view` and subscribes to
 * live events through `ctx.onEvent` (unsubscribed, with its timers, when the page is left).
 */
import { Api, ApiError } from "./api.js";
import { h, replace } from "./dom.js";
import { Live } from "./live.js";
import { TaskPanel } from "./taskpanel.js";
import { messageOf, showError } from "./ui.js";
import { UnreachableWatch } from "./unreachable.js";
import { serverMode } from "../pages/cell_parts.js";

const TOKEN_KEY = "bollard.token";

/** Routes: a pattern of `#/` paths to the page module and its function. */
const ROUTES = /** @type {[RegExp, string, string[]][]} */ ([
  [/^\/?$/, "../pages/overview.js", []],
  [/^\/nodes$/, "../pages/nodes.js", []],
  [/^\/nodes\/([^/]+)$/, "../pages/node.js", ["name"]],
  [/^\/cells$/, "../pages/cells.js", []],
  [/^\/cells\/([^/]+)$/, "../pages/cell.js", ["name"]],
  [/^\/vms$/, "../pages/vms.js", []],
  [/^\/vms\/new$/, "../pages/vm_create.js", []],
  [/^\/vms\/([^/]+)$/, "../pages/vm.js", ["name"]],
  [/^\/vms\/([^/]+)\/console$/, "../pages/vm_console.js", ["name"]],
  [/^\/flavors$/, "../pages/flavors.js", []],
  [/^\/flavors\/([^/]+)$/, "../pages/flavor.js", ["name"]],
  [/^\/ha$/, "../pages/ha.js", []],
  [/^\/migrations(?:\?(.*))?$/, "../pages/migrations.js", ["query"]],
  [/^\/volumes$/, "../pages/volumes.js", []],
  [/^\/volumes\/([^/]+)$/, "../pages/volume.js", ["name"]],
  [/^\/pools$/, "../pages/pools.js", []],
  [/^\/pools\/([^/]+)$/, "../pages/pool.js", ["name"]],
  [/^\/tasks$/, "../pages/tasks.js", []],
  [/^\/tasks\/([^/]+)$/, "../pages/task.js", ["id"]],
  [/^\/events$/, "../pages/events.js", []],
  [/^\/commands$/, "../pages/commands.js", []],
  [/^\/commands\/([^/]+)$/, "../pages/command.js", ["id"]],
  [/^\/reconcile$/, "../pages/reconcile.js", []],
  [/^\/settings$/, "../pages/settings.js", []],
]);

/** @param {string} id */
function el(id) {
  return /** @type {HTMLElement} */ (document.getElementById(id));
}

function showLogin(/** @type {string | null} */ message) {
  for (const id of ["nav", "whoami", "logout", "live", "task-panel", "unreachable"]) el(id).hidden = true;
  showError(message);
  const input = h("input", {
    id: "token",
    type: "password",
    autocomplete: "current-password",
    required: true,
    "data-testid": "token-input",
    "aria-describedby": "token-help",
  });
  const form = h(
    "form",
    { class: "login", "data-testid": "login" },
    h("h1", null, "Sign in to Bollard"),
    h("label", { for: "token" }, "API token"),
    input,
    h(
      "p",
      { id: "token-help", class: "muted" },
      "The admin token (", h("code", null, "<data-dir>/admin.token"), ") or a user's token from ",
      h("code", null, "bollard token create"), ". It is kept in this tab only.",
    ),
    h("button", { type: "submit", "data-testid": "login-submit" }, "Sign in"),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const token = /** @type {HTMLInputElement} */ (input).value.trim();
    if (!token) return;
    await start(token, true);
  });
  replace(el("view"), form);
  input.focus();
}

/**
 * @param {string} token
 * @param {boolean} [fromForm] signed in with the form (not a session kept by the tab)
 */
async function start(token, fromForm = false) {
  const api = new Api(token);
  let me;
  try {
    me = await api.get("/whoami");
  } catch (err) {
    sessionStorage.removeItem(TOKEN_KEY);
    const why = err instanceof ApiError && err.status === 401 ? `Sign-in refused: ${err.message}` : messageOf(err);
    showLogin(why);
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  showError(null);
  const permissions = new Set(me.permissions);
  const live = new Live(token, el("live"));
  // An API server's answers name the cells that did not answer: a warning over the page.
  const unreachable = new UnreachableWatch(el("unreachable"));
  unreachable.observe(api);
  // The Cells page is an API server's only (GET /status says mode "cells").
  const cellsLink = el("nav-cells");
  cellsLink.hidden = true;
  void serverMode(api).then((mode) => (cellsLink.hidden = mode !== "cells"));
  api.onUnauthorized = () => {
    live.stop();
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin("Your token is no longer accepted (expired or revoked): sign in again.");
  };
  el("nav").hidden = false;
  const who = el("whoami");
  who.hidden = false;
  who.textContent = `${me.user} (${me.role})`;
  const logout = el("logout");
  logout.hidden = false;
  logout.onclick = () => {
    live.stop();
    sessionStorage.removeItem(TOKEN_KEY);
    window.location.hash = "#/";
    showLogin(null);
  };

  /**
   * What a page gets: a view element of its own (a page left behind while it still loads
   * draws into a detached element, never over the page shown after it), and subscriptions
   * and timers that end when the page is left (at once, if it was left already).
   * @param {HTMLElement} view
   * @param {() => boolean} current whether the page is still the one shown
   * @param {(() => void)[]} ends what to do when it is left
   * @returns {import("./ui.js").Ctx}
   */
  function pageCtx(view, current, ends) {
    /** @param {() => void} end */
    const own = (end) => {
      if (current()) ends.push(end);
      else end();
    };
    return {
      api,
      me,
      view,
      can: (action) => permissions.has(action),
      onEvent: (fn) => {
        const off = live.subscribe(fn);
        own(off);
        return off;
      },
      every: (fn, ms) => {
        const timer = setInterval(fn, ms);
        own(() => clearInterval(timer));
      },
      go: (route) => {
        window.location.hash = route;
      },
      refreshTasks: () => panel.refresh(),
    };
  }
  // The panel lives for the whole session: what it subscribes to is never ended.
  const panel = new TaskPanel(el("task-panel"), pageCtx(el("task-panel"), () => true, []));

  /** @type {(() => void)[]} */
  let cleanups = [];
  let generation = 0;
  async function show() {
    const mine = ++generation;
    for (const off of cleanups) off();
    /** @type {(() => void)[]} */
    const ends = [];
    cleanups = ends;
    showError(null);
    unreachable.reset();
    const path = decodeURIComponent(window.location.hash.replace(/^#/, "")) || "/";
    for (const link of document.querySelectorAll("#nav a")) {
      const href = link.getAttribute("href")?.slice(1) ?? "";
      const current =
        href === "/" ? path === "/" : path === href || path.startsWith(href + "/") || path.startsWith(href + "?");
      if (current) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    const view = h("div", { class: "page" });
    replace(el("view"), view);
    const found = ROUTES.find(([pattern]) => pattern.test(path));
    if (!found) {
      replace(view, h("h1", null, "Not found"), h("p", null, `No page at ${path}.`));
      return;
    }
    const [pattern, module, names] = found;
    const match = /** @type {RegExpExecArray} */ (pattern.exec(path));
    /** @type {Record<string, string>} */
    const params = {};
    names.forEach((name, i) => (params[name] = match[i + 1]));
    replace(view, h("p", { class: "muted", "aria-busy": "true" }, "Loading…"));
    try {
      const page = await import(module);
      if (mine !== generation) return;
      await page.render(pageCtx(view, () => mine === generation, ends), params);
    } catch (err) {
      if (mine !== generation) return;
      replace(view, h("h1", null, "This page could not be shown"));
      showError(messageOf(err));
    }
  }
  window.onhashchange = () => void show();
  live.start();
  panel.start();
  const shown = show(); // (draws the nav's current link and takes the form away at once)
  if (fromForm) focusNav();
  await shown;
}

/**
 * After signing in with the form, whose field had the focus and is gone with it: the focus
 * starts again at the top, on the nav's link of the page shown, as on a page freshly loaded.
 * Left where the form was, the next Tab would go on into the page and the task panel first,
 * through as many stops as they had drawn by then.
 */
function focusNav() {
  const current = document.querySelector('#nav a[aria-current="page"]') ?? document.querySelector("#nav a");
  if (current instanceof HTMLElement) current.focus();
}

const saved = sessionStorage.getItem(TOKEN_KEY);
if (saved) void start(saved);
else showLogin(null);
