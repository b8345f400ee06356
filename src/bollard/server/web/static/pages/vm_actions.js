// @ts-check
/** The "Actions" section of the VM page: the VM's instance actions
 * (`GET /vms/{name}/actions`, newest first), each of which opens to show its events
 * (`GET /vms/{name}/actions/{request_id}`). It reads on its own: a failure is said in the
 * section, never stops the rest of the page. */
import { pathOf } from "../js/api.js";
import { h } from "../js/dom.js";
import { messageOf } from "../js/ui.js";
import { actionsTable } from "./action_parts.js";
import { redraw } from "./vm_common.js";

/**
 * @typedef {import("./action_parts.js").Action} Action
 * @typedef {import("./action_parts.js").Opened} Opened
 */

/**
 * @param {import("../js/ui.js").Ctx} ctx
 * @param {string} name the VM
 * @returns {{root: HTMLElement, load: () => Promise<void>}} load never throws
 */
export function actionsPart(ctx, name) {
  const path = `${pathOf("vms", name)}/actions`;
  const root = h("div", { "data-testid": "vm-actions" });
  /** @type {Action[]} */
  let actions = [];
  let total = 0;
  /** @type {string | null} */
  let error = null;
  /** @type {Map<string, Opened>} the actions whose events are shown */
  const opened = new Map();

  function draw() {
    const now = Date.now();
    redraw(root, JSON.stringify([actions, total, error, [...opened], Math.round(now / 10000)]), () => {
      if (error) return h("p", { class: "muted", "data-testid": "vm-actions-error" }, `The actions could not be read: ${error}`);
      const shown = total > actions.length ? h("p", { class: "muted" }, `The newest ${actions.length} of ${total}.`) : null;
      return [actionsTable(actions, opened, toggle, now), shown];
    });
  }

  /** @param {string} id */
  async function readEvents(id) {
    /** @type {Opened} */
    let got;
    try {
      const answer = await ctx.api.get(`${path}/${encodeURIComponent(id)}`);
      got = { events: answer.events ?? [] };
    } catch (err) {
      got = { error: messageOf(err) };
    }
    if (opened.has(id)) opened.set(id, got); // (closed meanwhile: stays closed)
  }

  /** @param {string} id */
  function toggle(id) {
    if (opened.has(id)) {
      opened.delete(id);
      draw();
      return;
    }
    opened.set(id, { loading: true });
    draw();
    void readEvents(id).then(draw);
  }

  async function load() {
    try {
      const answer = await ctx.api.get(path);
      actions = answer.items;
      total = answer.total ?? answer.items.length;
      error = null;
    } catch (err) {
      error = messageOf(err);
    }
    // Opened actions still under way get new events: read them again.
    const running = [...opened.keys()].filter((id) => {
      const a = actions.find((x) => x.request_id === id);
      const shown = opened.get(id);
      return !a || a.result === "running" || (shown !== undefined && "events" in shown && shown.events.some((e) => e.result === "running" || e.result === "pending"));
    });
    await Promise.all(running.map(readEvents));
    draw();
  }

  return { root, load };
}
