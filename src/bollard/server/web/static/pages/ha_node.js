// @ts-check
/** The node page's HA part: per-node maintenance (on: the node is drained like a flush and
 * never fenced until it is off; off: its VMs come back), through `POST
 * /nodes/{name}/maintenance` {"on"} which answers the drain's task; and the node's shutdown
 * policy (what a clean shutdown or reboot of its host means), set with `PATCH /nodes/{name}`
 * {"shutdown_policy"} (null: the setting ha.shutdown_policy). */
import { pathOf } from "../js/api.js";
import { facts, h, link, replace } from "../js/dom.js";
import { when } from "../js/format.js";
import { actionButton, badge, confirmDialog } from "../js/ui.js";
import { redraw, select } from "./vm_common.js";

/** The policy actions of the two calls (domain/policy.py). */
export const MAINTENANCE_PERMISSION = "node.flush";
export const SHUTDOWN_POLICY_PERMISSION = "node.update";

export const SHUTDOWN_POLICIES = /** @type {[string, string][]} */ ([
  ["freeze", "freeze"],
  ["failover", "failover"],
  ["migrate", "migrate"],
  ["conditional", "conditional"],
]);
const POLICY_HELP =
  "On a clean shutdown or reboot of its host — freeze: its VMs stay, it is not fenced, nothing is " +
  "recovered; failover: its HA VMs are recovered once the host reads off; migrate: it is drained " +
  "first; conditional: freeze on a reboot, failover on a power-off.";

/**
 * The confirmation before maintenance on or off.
 * @param {string} name
 * @param {boolean} on
 */
export function maintenanceText(name, on) {
  return on
    ? `Every VM on ${name} is migrated to other nodes (VMs whose HA state is ignored stay), nothing ` +
        `new is placed on it, and ${name} is never fenced while maintenance is on, even if it goes ` +
        "dark. It ends in the scheduling state maintenance."
    : `${name} takes VMs again and is fenced again like any node if it dies; the VMs the ` +
        "maintenance moved away are migrated back.";
}

/**
 * The node's HA facts: maintenance, its shutdown policy (its own, or the setting's), and
 * its last clean shutdown.
 * @param {any} node
 */
export function nodeHaFacts(node) {
  const own = node.shutdown_policy;
  const effective = own ?? node.shutdown_policy_effective;
  return facts([
    ["Maintenance", badge(node.maintenance ? "on" : "off", node.maintenance ? "warn" : "idle"), "maintenance"],
    ["Shutdown policy", effective ? `${effective}${own ? "" : " (the setting ha.shutdown_policy)"}` : "–", "shutdown_policy"],
    ["Last clean shutdown", node.shutdown_kind ? `${node.shutdown_kind}${node.shutdown_at ? ` at ${when(node.shutdown_at)}` : ""}` : null, "shutdown"],
  ]);
}

/**
 * The HA section of the node page: `update(node)` draws it (again, when what it shows
 * changed). `result` gets the line naming a task started; `refresh` reloads the page.
 * @param {import("../js/ui.js").Ctx} ctx
 * @param {string} name
 * @param {HTMLElement} result
 * @param {() => Promise<void>} refresh
 */
export function nodeHaSection(ctx, name, result, refresh) {
  const path = pathOf("nodes", name);
  const factsBox = h("div");
  const controls = h("div", { class: "toolbar", "data-testid": "node-ha-controls" });
  const root = h(
    "section",
    { "data-testid": "node-ha", "aria-labelledby": "node-ha-h" },
    h("h2", { id: "node-ha-h" }, "Maintenance and shutdown"),
    factsBox,
    controls,
  );

  /** @param {any} node */
  function build(node) {
    const on = !node.maintenance;
    const maintenance = actionButton(
      ctx,
      MAINTENANCE_PERMISSION,
      on ? "node-maintenance-on" : "node-maintenance-off",
      on ? "Maintenance on…" : "Maintenance off…",
      async () => {
        const title = `Maintenance ${on ? "on" : "off"} for ${name}?`;
        if (!(await confirmDialog(title, maintenanceText(name, on), on ? "Maintenance on" : "Maintenance off"))) return;
        const answer = await ctx.api.post(`${path}/maintenance`, { on });
        const task = answer?.task ?? answer;
        if (task?.id) {
          replace(result, `Maintenance ${on ? "on" : "off"} for ${name}: task `, link(`#/tasks/${encodeURIComponent(task.id)}`, task.id, { "data-testid": "action-task" }), " started.");
        } else replace(result, `Maintenance ${on ? "on" : "off"} for ${name}.`);
        await refresh();
      },
      { title: on ? "Drain it and suspend its fencing." : "End its maintenance: its VMs come back." },
    );
    const effective = node.shutdown_policy_effective ?? "";
    const policy = select("shutdown_policy", [["", `setting (${effective || "?"})`], ...SHUTDOWN_POLICIES], node.shutdown_policy ?? "");
    policy.setAttribute("aria-label", "Shutdown policy");
    policy.setAttribute("title", POLICY_HELP);
    const save = actionButton(
      ctx,
      SHUTDOWN_POLICY_PERMISSION,
      "node-shutdown-policy-save",
      "Set shutdown policy",
      async () => {
        const value = /** @type {HTMLSelectElement} */ (policy).value || null;
        await ctx.api.patch(path, { shutdown_policy: value });
        replace(result, `Shutdown policy of ${name}: ${value ?? "the setting's"}.`);
        await refresh();
      },
    );
    return [
      maintenance,
      save ? h("label", { class: "inline" }, "Shutdown policy ", policy) : null,
      save,
      save ? h("small", { class: "muted" }, POLICY_HELP) : null,
    ];
  }

  return {
    root,
    /** @param {any} node */
    update(node) {
      const shown = JSON.stringify([node.maintenance, node.shutdown_policy, node.shutdown_policy_effective, node.shutdown_kind, node.shutdown_at]);
      redraw(factsBox, shown, () => nodeHaFacts(node));
      redraw(controls, JSON.stringify([node.maintenance, node.shutdown_policy, node.shutdown_policy_effective]), () => build(node));
      controls.hidden = controls.childElementCount === 0;
    },
  };
}
