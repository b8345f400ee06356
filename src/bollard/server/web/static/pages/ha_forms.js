// @ts-check
/** The HA page's forms: create or edit an HA group (`POST /ha/groups`, `PATCH
 * /ha/groups/{name}`: only what changed is sent) and an affinity rule (`POST /ha/rules`,
 * `PATCH /ha/rules/{name}`), both needing permission ha.manage. The API judges the values;
 * its message is shown as one line and each part next to the field it names. */
import { ApiError } from "../js/api.js";
import { h } from "../js/dom.js";
import { actionForm, submit } from "./storage_forms.js";
import { changes, nodesLine, parseNames, parseNodes } from "./ha_parts.js";
import { fieldErrors, labelled, select, showFieldErrors } from "./vm_common.js";

/**
 * @typedef {import("../js/ui.js").Ctx} Ctx
 * @typedef {import("./ha_parts.js").HaGroup} HaGroup
 * @typedef {import("./ha_parts.js").AffinityRule} AffinityRule
 */

const KINDS = /** @type {[string, string][]} */ ([
  ["together", "together: on one node"],
  ["apart", "apart: no two on one node"],
]);

/**
 * @param {string} name
 * @param {string} label
 * @param {boolean} checked
 * @param {string} help
 */
function checkbox(name, label, checked, help) {
  const box = h("input", { type: "checkbox", name, checked });
  return {
    box,
    field: h("div", { class: "field" }, h("label", { class: "check" }, box, label), h("small", { class: "muted" }, help)),
  };
}

/** @param {HTMLElement} el */
const text = (el) => /** @type {HTMLInputElement} */ (el).value.trim();
/** @param {HTMLElement} el */
const ticked = (el) => /** @type {HTMLInputElement} */ (el).checked;

/**
 * PATCH `path` with `body`, or say that nothing changed.
 * @param {Ctx} ctx
 * @param {HTMLElement} form
 * @param {string} path
 * @param {Record<string, any>} body
 * @param {HTMLElement} note
 */
async function patch(ctx, form, path, body, note) {
  showFieldErrors(form, []);
  if (Object.keys(body).length === 0) {
    note.textContent = "Nothing changed.";
    return null;
  }
  note.textContent = "";
  try {
    return await ctx.api.patch(path, body);
  } catch (err) {
    if (err instanceof ApiError) showFieldErrors(form, fieldErrors(err.message));
    throw err;
  }
}

/**
 * The group form: a new group (`group` null) or an edit of `group`. `done(group)` is called
 * with the group as the server answered it.
 * @param {Ctx} ctx
 * @param {HaGroup | null} group
 * @param {(g: HaGroup) => void} done
 * @param {() => void} cancel
 */
export function groupForm(ctx, group, done, cancel) {
  const name = h("input", { type: "text", name: "name", autocomplete: "off", spellcheck: "false", maxlength: 63, value: group?.name ?? "", disabled: Boolean(group) });
  const nodes = h("input", { type: "text", name: "nodes", autocomplete: "off", spellcheck: "false", value: group ? nodesLine(group.nodes) : "", placeholder: "node1:2, node2:1" });
  const restricted = checkbox("restricted", "Restricted", group?.restricted ?? false, "Its VMs never run outside the group: when none of its nodes can take one, it waits.");
  const nofailback = checkbox("nofailback", "No failback", group?.nofailback ?? false, "Do not move a VM back when a node of higher priority than its own is available again.");
  const description = h("input", { type: "text", name: "description", autocomplete: "off", value: group?.description ?? "" });
  const note = h("span", { class: "muted", "aria-live": "polite", "data-testid": "ha-group-note" });
  const edit = group !== null;
  const form = actionForm(
    ctx,
    edit
      ? { testid: "ha-group-edit-form", title: `Edit HA group ${group.name}`, permission: "ha.manage", action: "ha-group-save", label: "Save" }
      : { testid: "ha-group-create-form", title: "Create an HA group", permission: "ha.manage", action: "ha-group-create", label: "Create group" },
    [
      labelled("name", "Name", name, edit ? undefined : "Letters, digits, '.', '_' and '-', starting with a letter or digit."),
      labelled("nodes", "Nodes and priorities", nodes, "node:priority, … — a VM of the group runs on its highest-priority available node (a node without a priority has 0)."),
      restricted.field,
      nofailback.field,
      labelled("description", "Description", description),
    ],
    async (f) => {
      const parsed = parseNodes(text(nodes));
      if (parsed.errors.length > 0) {
        showFieldErrors(f, parsed.errors.map((e) => /** @type {[string, string]} */ (["nodes", e])));
        throw new Error(`nodes: ${parsed.errors.join("; ")}`);
      }
      const values = { nodes: parsed.nodes, restricted: ticked(restricted.box), nofailback: ticked(nofailback.box), description: text(description) };
      if (!edit) {
        done(await submit(ctx, f, "/ha/groups", { name: text(name), ...values }));
        return;
      }
      const saved = await patch(ctx, f, `/ha/groups/${encodeURIComponent(group.name)}`, changes(group, values), note);
      if (saved) done(saved);
    },
    cancel,
  );
  /** @type {HTMLElement} */ (form.querySelector(".toolbar")).append(note);
  return { form, focus: () => (edit ? nodes : name).focus() };
}

/**
 * The rule form: a new rule (`rule` null) or an edit of `rule`.
 * @param {Ctx} ctx
 * @param {AffinityRule | null} rule
 * @param {(r: AffinityRule) => void} done
 * @param {() => void} cancel
 */
export function ruleForm(ctx, rule, done, cancel) {
  const name = h("input", { type: "text", name: "name", autocomplete: "off", spellcheck: "false", maxlength: 63, value: rule?.name ?? "", disabled: Boolean(rule) });
  const kind = select("kind", KINDS, rule?.kind ?? "apart");
  const strict = checkbox("strict", "Strict", rule?.strict ?? false, "A filter: a placement that breaks the rule is refused (the VM waits). Not strict: a preference, broken only when nothing else fits.");
  const vms = h("input", { type: "text", name: "vms", autocomplete: "off", spellcheck: "false", value: rule ? rule.vms.join(", ") : "", placeholder: "db1, db2" });
  const description = h("input", { type: "text", name: "description", autocomplete: "off", value: rule?.description ?? "" });
  const note = h("span", { class: "muted", "aria-live": "polite", "data-testid": "ha-rule-note" });
  const edit = rule !== null;
  const form = actionForm(
    ctx,
    edit
      ? { testid: "ha-rule-edit-form", title: `Edit affinity rule ${rule.name}`, permission: "ha.manage", action: "ha-rule-save", label: "Save" }
      : { testid: "ha-rule-create-form", title: "Create an affinity rule", permission: "ha.manage", action: "ha-rule-create", label: "Create rule" },
    [
      labelled("name", "Name", name),
      labelled("kind", "Kind", kind),
      strict.field,
      labelled("vms", "VMs", vms, "At least 2 VM names, comma-separated. VMs placed already stay; the rule applies to their next placement."),
      labelled("description", "Description", description),
    ],
    async (f) => {
      const values = {
        kind: /** @type {HTMLSelectElement} */ (kind).value,
        strict: ticked(strict.box),
        vms: parseNames(text(vms)),
        description: text(description),
      };
      if (!edit) {
        done(await submit(ctx, f, "/ha/rules", { name: text(name), ...values }));
        return;
      }
      const saved = await patch(ctx, f, `/ha/rules/${encodeURIComponent(rule.name)}`, changes(rule, values), note);
      if (saved) done(saved);
    },
    cancel,
  );
  /** @type {HTMLElement} */ (form.querySelector(".toolbar")).append(note);
  return { form, focus: () => (edit ? vms : name).focus() };
}
