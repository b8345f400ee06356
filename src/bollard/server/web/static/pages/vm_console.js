// @ts-check
/** `#/vms/NAME/console`: the VM's serial console log tail (read on its host through
 * `GET /vms/{name}/console`, every 2 s) and its graphical console (noVNC, see vm_vnc.js).
 * A driver that keeps no console log (sim) is said calmly, not as an error. */
import { ApiError, pathOf } from "../js/api.js";
import { h, link, replace } from "../js/dom.js";
import { messageOf, showError } from "../js/ui.js";
import { select, vmRoute } from "./vm_common.js";
import { vncPanel } from "./vm_vnc.js";

const POLL_MS = 2000;
/** After "keeps no console log", ask again only this often (the VM may move to a host that keeps one). */
const QUIET_MS = 15000;

/**
 * @param {import("../js/ui.js").Ctx} ctx
 * @param {{name: string}} params
 */
export async function render(ctx, params) {
  const name = params.name;
  const title = h("h1", null, `Console of ${name}`);
  const back = link(vmRoute(name), `Back to ${name}`);
  if (!ctx.can("vm.console")) {
    replace(
      ctx.view,
      h(
        "div",
        { class: "vm-page" },
        h("div", { class: "page-head" }, title, back),
        h("p", { "data-testid": "not-allowed" }, `Your role (${ctx.me.role}) may not open a VM's console.`),
      ),
    );
    return;
  }

  const lines = select(
    "lines",
    [
      ["50", "50 lines"],
      ["200", "200 lines"],
      ["1000", "1000 lines"],
    ],
    "200",
  );
  lines.id = "serial-lines";
  const follow = h("input", { type: "checkbox", id: "serial-follow", checked: true });
  const where = h("span", { class: "muted", "data-testid": "serial-where" });
  const status = h("p", { class: "muted", "data-testid": "serial-status", "aria-live": "polite" }, "Reading the log…");
  const log = h("pre", { class: "log", "data-testid": "serial-log", tabindex: 0, "aria-label": "Serial console log", hidden: true });
  const vnc = vncPanel(ctx, name);

  replace(
    ctx.view,
    h(
      "div",
      { class: "vm-page" },
      h("div", { class: "page-head" }, title, back),
      h(
        "section",
        { "aria-labelledby": "serial-title" },
        h("h2", { id: "serial-title" }, "Serial console"),
        h(
          "div",
          { class: "toolbar" },
          h("label", { for: "serial-lines" }, "Show"),
          lines,
          h("label", { class: "check", for: "serial-follow" }, follow, "Follow the end"),
          where,
        ),
        status,
        log,
      ),
      h(
        "section",
        { "aria-labelledby": "vnc-title" },
        h("h2", { id: "vnc-title" }, "Graphical console"),
        vnc.root,
      ),
    ),
  );

  let busy = false;
  let quietUntil = 0;
  /** The error line this page put up (cleared when the log reads again). */
  let shown = /** @type {string | null} */ (null);

  async function poll() {
    if (busy || Date.now() < quietUntil) return;
    busy = true;
    try {
      const answer = await ctx.api.get(`${pathOf("vms", name)}/console`, {
        lines: /** @type {HTMLSelectElement} */ (lines).value,
      });
      if (shown !== null) {
        if (document.getElementById("error")?.textContent === shown) showError(null);
        shown = null;
      }
      const display = answer.display;
      where.textContent = `read on ${answer.node}` + (display ? `; display: ${display.type ?? "vnc"} on the host` : "");
      status.hidden = true;
      log.hidden = false;
      const text = answer.log || "(the log is empty)";
      if (log.textContent !== text) {
        log.textContent = text;
        if (/** @type {HTMLInputElement} */ (follow).checked) log.scrollTop = log.scrollHeight;
      }
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) {
        // The driver keeps no console log, or the host does not have the VM: said calmly.
        status.textContent = `No serial console: ${err.message}.`;
        status.hidden = false;
        log.hidden = true;
        where.textContent = "";
        quietUntil = Date.now() + QUIET_MS;
      } else {
        shown = `serial console: ${messageOf(err)}`;
        showError(shown);
      }
    } finally {
      busy = false;
    }
  }

  lines.addEventListener("change", () => {
    quietUntil = 0;
    void poll();
  });
  follow.addEventListener("change", () => {
    if (/** @type {HTMLInputElement} */ (follow).checked) log.scrollTop = log.scrollHeight;
  });

  // Leaving the page closes the graphical console (the router replaces the view first).
  const root = /** @type {HTMLElement} */ (ctx.view.firstElementChild);
  const unload = () => vnc.stop();
  const leave = () => {
    if (root.isConnected) return;
    vnc.stop();
    window.removeEventListener("hashchange", leave);
    window.removeEventListener("pagehide", unload);
  };
  window.addEventListener("hashchange", leave);
  window.addEventListener("pagehide", unload);

  await poll();
  ctx.every(() => void poll(), POLL_MS);
}
