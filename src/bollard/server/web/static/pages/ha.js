// @ts-check
/** `#/ha`: HA policies. The HA groups (nodes with priorities, restricted, failback, how many
 * VMs are in each) and the affinity rules between VMs, each with Create, Edit and Delete for
 * those with ha.manage (operator; the server refuses to delete a group VMs are in, and its
 * one line is shown); then every VM's HA request state, group, node, and its restarts and
 * relocations against their limits (`bollard ha status`). A VM joins a group on its own page.
 * Live: refreshed on HA and VM events, and every 10 s. */
import { h, replace } from "../js/dom.js";
import { actionButton, confirmDialog } from "../js/ui.js";
import { keepFresh, stillShown } from "./nodes_table.js";
import { groupForm, ruleForm } from "./ha_forms.js";
import { concernsHa, deleteGroupText, deleteRuleText, groupTable, ruleTable, statusTable } from "./ha_parts.js";
import { redraw } from "./vm_common.js";

/**
 * @typedef {import("../js/ui.js").Ctx} Ctx
 * @typedef {import("./ha_parts.js").HaGroup} HaGroup
 * @typedef {import("./ha_parts.js").AffinityRule} AffinityRule
 */

/**
 * A setting's value; null when it cannot be read (a server before HA policies).
 * @param {Ctx} ctx
 * @param {string} key
 */
async function setting(ctx, key) {
  try {
    return (await ctx.api.get(`/settings/${key}`)).value ?? null;
  } catch {
    return null;
  }
}

/**
 * One section's form box and its opener: `open(build)` shows the form `build` makes (a
 * second click on the same opener closes it).
 * @param {HTMLElement} box
 */
function formSlot(box) {
  /** @type {HTMLElement | null} */
  let opener = null;
  const close = () => {
    replace(box);
    opener?.setAttribute("aria-expanded", "false");
    opener?.focus();
    opener = null;
  };
  /**
   * @param {HTMLElement | null} by the button that opened it
   * @param {(close: () => void) => {form: HTMLElement, focus: () => void}} build
   */
  const open = (by, build) => {
    const again = opener === by && box.firstChild;
    close();
    if (again) return;
    const { form, focus } = build(close);
    replace(box, form);
    opener = by;
    by?.setAttribute("aria-expanded", "true");
    focus();
  };
  return { open, close };
}

/**
 * @param {Ctx} ctx
 */
export async function render(ctx) {
  const hash = window.location.hash;
  const groupCount = h("span", { class: "muted", "data-testid": "ha-group-count", "aria-live": "polite" });
  const ruleCount = h("span", { class: "muted", "data-testid": "ha-rule-count", "aria-live": "polite" });
  const groupFormBox = h("div");
  const ruleFormBox = h("div");
  const groupsBox = h("div", { "data-testid": "ha-groups" });
  const rulesBox = h("div", { "data-testid": "ha-rules" });
  const statusBox = h("div", { "data-testid": "ha-status" });
  const groupSlot = formSlot(groupFormBox);
  const ruleSlot = formSlot(ruleFormBox);
  let refreshNow = () => Promise.resolve();
  /** after a form saved: close it, refresh the page @param {() => void} close */
  const saved = (close) => () => {
    close();
    void refreshNow();
  };

  const newGroup = actionButton(
    ctx,
    "ha.manage",
    "ha-group-create-open",
    "Create group",
    async () => groupSlot.open(newGroup, (close) => groupForm(ctx, null, saved(close), close)),
    { class: "action primary", "aria-expanded": "false" },
  );
  const newRule = actionButton(
    ctx,
    "ha.manage",
    "ha-rule-create-open",
    "Create rule",
    async () => ruleSlot.open(newRule, (close) => ruleForm(ctx, null, saved(close), close)),
    { class: "action primary", "aria-expanded": "false" },
  );

  /** @param {HaGroup} g */
  const groupActions = (g) => {
    const edit = actionButton(
      ctx,
      "ha.manage",
      "ha-group-edit",
      "Edit",
      async () => groupSlot.open(edit, (close) => groupForm(ctx, g, saved(close), close)),
      { value: g.name, "aria-label": `Edit HA group ${g.name}`, "aria-expanded": "false" },
    );
    const remove = actionButton(
      ctx,
      "ha.manage",
      "ha-group-delete",
      "Delete",
      async () => {
        if (!(await confirmDialog(`Delete HA group ${g.name}?`, deleteGroupText(g), "Delete"))) return;
        await ctx.api.del(`/ha/groups/${encodeURIComponent(g.name)}`);
        await refreshNow();
      },
      { class: "action danger", value: g.name, "aria-label": `Delete HA group ${g.name}` },
    );
    return [edit, " ", remove];
  };

  /** @param {AffinityRule} r */
  const ruleActions = (r) => {
    const edit = actionButton(
      ctx,
      "ha.manage",
      "ha-rule-edit",
      "Edit",
      async () => ruleSlot.open(edit, (close) => ruleForm(ctx, r, saved(close), close)),
      { value: r.name, "aria-label": `Edit affinity rule ${r.name}`, "aria-expanded": "false" },
    );
    const remove = actionButton(
      ctx,
      "ha.manage",
      "ha-rule-delete",
      "Delete",
      async () => {
        if (!(await confirmDialog(`Delete affinity rule ${r.name}?`, deleteRuleText(r), "Delete"))) return;
        await ctx.api.del(`/ha/rules/${encodeURIComponent(r.name)}`);
        await refreshNow();
      },
      { class: "action danger", value: r.name, "aria-label": `Delete affinity rule ${r.name}` },
    );
    return [edit, " ", remove];
  };

  async function load() {
    /** @type {[HaGroup[], AffinityRule[], any[], any, any]} */
    const [groups, rules, vms, maxRestart, maxRelocate] = await Promise.all([
      ctx.api.all("/ha/groups"),
      ctx.api.all("/ha/rules"),
      ctx.api.all("/vms"),
      setting(ctx, "ha.max_restart"),
      setting(ctx, "ha.max_relocate"),
    ]);
    const manage = ctx.can("ha.manage");
    groupCount.textContent = `${groups.length} group${groups.length === 1 ? "" : "s"}`;
    ruleCount.textContent = `${rules.length} rule${rules.length === 1 ? "" : "s"}`;
    redraw(groupsBox, JSON.stringify(groups), () => groupTable(groups, manage ? groupActions : null));
    redraw(rulesBox, JSON.stringify(rules), () => ruleTable(rules, manage ? ruleActions : null));
    const limits = { max_restart: maxRestart, max_relocate: maxRelocate };
    const shown = vms.filter((v) => !v.unreachable);
    redraw(statusBox, JSON.stringify([shown, limits]), () => statusTable(shown, limits));
  }

  await load();
  if (!stillShown(hash)) return;
  replace(
    ctx.view,
    h(
      "div",
      { class: "storage-page" },
      h("h1", null, "High availability"),
      h(
        "p",
        { class: "muted" },
        "Where HA VMs prefer to run (groups of nodes with priorities) and which VMs must share a node or " +
          "never share one (affinity rules). Creation, migration, recovery after a fence, drain and failback " +
          "all follow them. A VM joins a group, and gets its HA state and limits, on its own page.",
      ),
      h(
        "section",
        { "aria-labelledby": "ha-groups-h" },
        h("div", { class: "page-head" }, h("h2", { id: "ha-groups-h" }, "HA groups"), groupCount, newGroup),
        groupFormBox,
        groupsBox,
      ),
      h(
        "section",
        { "aria-labelledby": "ha-rules-h" },
        h("div", { class: "page-head" }, h("h2", { id: "ha-rules-h" }, "Affinity rules"), ruleCount, newRule),
        ruleFormBox,
        rulesBox,
      ),
      h("section", { "aria-labelledby": "ha-status-h" }, h("h2", { id: "ha-status-h" }, "VMs"), statusBox),
    ),
  );
  refreshNow = keepFresh(ctx, load, concernsHa, 10000);
}
