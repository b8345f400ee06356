// @ts-check
/** The node page's actions: flush, unflush, confirm-down (each after a confirmation that says
 * what it does) and the power actions status, on, off and cycle through the node's power
 * driver. Only the actions the caller's role may do are drawn. */
import { pathOf } from "../js/api.js";
import { h, link, replace } from "../js/dom.js";
import { when } from "../js/format.js";
import { actionButton, badge, confirmDialog } from "../js/ui.js";
import { CONFIRMABLE, FLUSHABLE, UNFLUSHABLE } from "./node_lists.js";

/**
 * @typedef {import("./nodes_table.js").Node} Node
 * @typedef {import("../js/ui.js").Ctx} Ctx
 * @typedef {{node: string, action: string, status: string | null, detail: string}} PowerAnswer
 */

/**
 * Flush, unflush and confirm-down, as the node's state allows them (the server checks again).
 * Started tasks are named in `result` with a link.
 * @param {Ctx} ctx
 * @param {Node} node
 * @param {HTMLElement} result
 * @param {() => Promise<void>} refresh
 * @returns {(HTMLElement | null)[]}
 */
export function nodeActions(ctx, node, result, refresh) {
  const name = node.name;
  const path = pathOf("nodes", name);
  /**
   * @param {string} what
   * @param {{id: string, type: string}} task
   */
  const started = async (what, task) => {
    replace(result, `${what}: task `, link(`#/tasks/${encodeURIComponent(task.id)}`, task.id, { "data-testid": "action-task" }), " started.");
    await refresh();
  };
  return [
    FLUSHABLE.has(node.scheduling)
      ? actionButton(ctx, "node.flush", "node-flush", "Flush", async () => {
          if (!(await confirmDialog(`Flush ${name}?`, flushText(name), "Flush"))) return;
          await started(`Flushing ${name}`, await ctx.api.post(`${path}/flush`));
        })
      : null,
    UNFLUSHABLE.has(node.scheduling)
      ? actionButton(ctx, "node.flush", "node-unflush", "Unflush", async () => {
          if (!(await confirmDialog(`Unflush ${name}?`, unflushText(name), "Unflush"))) return;
          await started(`Unflushing ${name}`, await ctx.api.post(`${path}/unflush`));
        })
      : null,
    CONFIRMABLE.has(node.health)
      ? actionButton(
          ctx,
          "node.confirm_down",
          "node-confirm-down",
          "Confirm down…",
          async () => {
            const ok = await confirmDialog(`Confirm that ${name} is off?`, confirmDownText(name), "It is off: restart its VMs elsewhere");
            if (!ok) return;
            await started(`${name} confirmed down; recovery`, await ctx.api.post(`${path}/confirm-down`));
          },
          { class: "action danger" },
        )
      : null,
  ];
}

/**
 * Power status, on, off and cycle through the node's power driver; the answer goes in
 * `answer` (`data-state` on or off).
 * @param {Ctx} ctx
 * @param {Node} node
 * @param {HTMLElement} answer
 * @param {() => Promise<void>} refresh
 * @returns {(HTMLElement | null)[]}
 */
export function powerActions(ctx, node, answer, refresh) {
  if (!node.power.driver) return [];
  const name = node.name;
  const driver = node.power.driver;
  /**
   * @param {"status" | "on" | "off" | "cycle"} action
   * @param {string} label
   * @param {(() => Promise<boolean>) | null} ask
   */
  const button = (action, label, ask) =>
    actionButton(
      ctx,
      "node.power",
      `node-power-${action}`,
      label,
      async () => {
        if (ask && !(await ask())) return;
        replace(answer, h("span", { class: "muted" }, `power ${action}: asking ${driver}…`));
        delete answer.dataset.state;
        try {
          /** @type {PowerAnswer} */
          const got = await ctx.api.post(`${pathOf("nodes", name)}/power/${action}`);
          showAnswer(answer, got);
        } catch (err) {
          replace(answer, h("span", { class: "field-error" }, `power ${action} failed`));
          throw err; // and its one line goes to the error bar
        }
        if (action !== "status") await refresh();
      },
      action === "off" || action === "cycle" ? { class: "action danger" } : {},
    );
  return [
    button("status", "Power status", null),
    button("on", "Power on", null),
    button("off", "Power off…", () => confirmDialog(`Power ${name} off?`, powerOffText(name, driver), "Power off")),
    button("cycle", "Power cycle…", () => confirmDialog(`Power-cycle ${name}?`, powerCycleText(name, driver), "Power cycle")),
  ];
}

/**
 * @param {HTMLElement} answer
 * @param {PowerAnswer} got
 */
function showAnswer(answer, got) {
  const at = when(new Date().toISOString());
  const status = got.status ?? "unknown";
  answer.dataset.state = status;
  const done = got.action === "status" ? "" : `${got.action} done; `;
  replace(
    answer,
    `${done}power is `,
    badge(status, status === "on" ? "good" : status === "off" ? "idle" : "warn"),
    got.detail ? ` (${got.detail})` : "",
    h("span", { class: "muted" }, ` at ${at}`),
  );
}

/** @param {string} name */
function flushText(name) {
  return (
    `Every VM on ${name} is migrated to other nodes, a few at a time, and nothing new is placed ` +
    `on ${name}; it ends "flushed". VMs that cannot move are shut down and marked to start ` +
    "again (autostart). Unflush brings them back."
  );
}

/** @param {string} name */
function unflushText(name) {
  return (
    `${name} takes new VMs again at once; the VMs flushed away from it are migrated back, and ` +
    "those the flush shut down are started again. A flush under way is stopped."
  );
}

/** @param {string} name */
function confirmDownText(name) {
  return (
    `You are swearing that the host ${name} is switched off and will stay off. Bollard then ` +
    `counts it as fenced and restarts its HA VMs on other nodes. If ${name} is in fact still ` +
    "running, those VMs run twice, on it and elsewhere, and their disks can be destroyed. " +
    "Check the host's power yourself first (its BMC, its PDU, or someone at the rack)."
  );
}

/**
 * @param {string} name
 * @param {string} driver
 */
function powerOffText(name, driver) {
  return (
    `${name} is switched off at once through its power driver (${driver}), without a shutdown: ` +
    "every VM running on it stops. Its agent goes silent, so Bollard declares the node dead; " +
    "with fencing enabled and maintenance off, its HA VMs are then restarted elsewhere."
  );
}

/**
 * @param {string} name
 * @param {string} driver
 */
function powerCycleText(name, driver) {
  return (
    `${name} is switched off and on again through its power driver (${driver}), without a ` +
    "shutdown: every VM running on it stops and the host reboots. If it stays silent long " +
    "enough, Bollard declares it dead and may fence it."
  );
}
