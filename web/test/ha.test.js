// Unit tests of the console's HA parts: the pure helpers (static/pages/ha_parts.js), the HA
// page (static/pages/ha.js with ha_forms.js) drawn into the fake DOM (web/fakes/browser.js)
// with a fake API, a VM's HA controls (ha_vm.js) and the node page's HA section (ha_node.js).
// `node --test web/test/`.
import assert from "node:assert/strict";
import { beforeEach, describe, test } from "node:test";

import { column, errorBar, fakeCtx, fakeDocument, fill, resetShell, settle } from "../fakes/browser.js";

const { ApiError } = await import("../../src/bollard/server/web/static/js/api.js");
const parts = await import("../../src/bollard/server/web/static/pages/ha_parts.js");
const haPage = await import("../../src/bollard/server/web/static/pages/ha.js");
const { haControls, haFacts } = await import("../../src/bollard/server/web/static/pages/ha_vm.js");
const { nodeHaSection, MAINTENANCE_PERMISSION, SHUTDOWN_POLICY_PERMISSION } = await import("../../src/bollard/server/web/static/pages/ha_node.js");

/** A group as GET /api/v1/ha/groups gives it. @param {Record<string, any>} over */
const group = (over = {}) => ({
  name: "web",
  nodes: { node1: 2, node2: 1 },
  restricted: false,
  nofailback: false,
  description: "",
  vms: 0,
  created_at: "2026-01-01T00:00:00Z",
  updated_at: "2026-01-01T00:00:00Z",
  ...over,
});
/** @param {Record<string, any>} over */
const rule = (over = {}) => ({ name: "dbs", kind: "apart", strict: true, vms: ["db1", "db2"], description: "", ...over });
/** @param {Record<string, any>} over */
const vm = (over = {}) => ({
  name: "web1",
  node: "node1",
  status: "ACTIVE",
  ha: null,
  ha_state: "started",
  ha_group: "web",
  max_restart: null,
  max_relocate: 3,
  ha_restarts: 1,
  ha_relocates: 0,
  ...over,
});
const page = (items) => ({ items, total: items.length, next_cursor: null });

describe("HA helpers", () => {
  test("nodes by priority, highest first, then by name", () => {
    assert.equal(parts.nodesLine({ b: 1, a: 1, c: 5 }), "c:5, a:1, b:1");
    assert.equal(parts.nodesLine(null), "");
  });
  test("parseNodes takes node:priority with commas, spaces or lines; a bare node is 0", () => {
    assert.deepEqual(parts.parseNodes("node1:2, node2:1\nnode3"), { nodes: { node1: 2, node2: 1, node3: 0 }, errors: [] });
    assert.deepEqual(parts.parseNodes("n:-5").nodes, { n: -5 });
    assert.deepEqual(parts.parseNodes("n1:x, :2, n1:1, n1:3, n2:1001").errors, [
      "the priority of n1 is not a whole number",
      '":2" names no node (node:priority)',
      "n1 is given twice",
      "the priority of n2 is not in -1000..1000",
    ]);
    assert.deepEqual(parts.parseNodes("n1, n1").errors, ["n1 is given twice"]);
    assert.deepEqual(parts.parseNodes(" ").errors, ["give at least one node (node:priority,...)"]);
  });
  test("changes: only what differs; nodes and VMs as sets", () => {
    const before = group();
    assert.deepEqual(parts.changes(before, { nodes: { node2: 1, node1: 2 }, restricted: false, description: "" }), {});
    assert.deepEqual(parts.changes(before, { nodes: { node1: 3 }, restricted: true, description: "x" }), {
      nodes: { node1: 3 },
      restricted: true,
      description: "x",
    });
    assert.deepEqual(parts.changes(rule(), { vms: ["db2", "db1"], kind: "apart" }), {});
    assert.deepEqual(parts.changes(rule(), { vms: ["db1"], kind: "together" }), { vms: ["db1"], kind: "together" });
  });
  test("names, delete texts, counts and tones", () => {
    assert.deepEqual(parts.parseNames("a, b c,a"), ["a", "b", "c"]);
    assert.match(parts.deleteGroupText(group({ vms: 2 })), /2 VMs are in it: the server refuses/);
    assert.doesNotMatch(parts.deleteGroupText(group()), /refuses/);
    assert.match(parts.deleteRuleText(rule()), /db1, db2\) stay where they are/);
    assert.equal(parts.ruleLine(rule({ strict: false, kind: "together" })), "non-strict together: db1, db2");
    assert.equal(parts.countOf(1, null, 2), "1/2");
    assert.equal(parts.countOf(0, 5, 2), "0/5");
    assert.equal(parts.countOf(undefined, null, null), "0/?");
    assert.equal(parts.haTone("error"), "bad");
    assert.equal(parts.haTone("ignored"), "warn");
    assert.ok(parts.concernsHa({ kind: "ha.group.created" }));
    assert.ok(parts.concernsHa({ kind: "vm.meta", vm: "web1" }));
    assert.ok(!parts.concernsHa({ kind: "node.up", vm: null }));
  });
});

describe("the HA page", () => {
  beforeEach(() => {
    resetShell();
    globalThis.window.location.hash = "#/ha";
  });
  const answers = (over = {}) => ({
    "GET /ha/groups": page([group({ vms: 1 }), group({ name: "db", nodes: { node3: 0 }, restricted: true, nofailback: true })]),
    "GET /ha/rules": page([rule()]),
    "GET /vms": page([vm(), vm({ name: "db1", ha_state: "error", ha_group: null, ha_restarts: 2, max_relocate: null, node: null })]),
    "GET /settings/ha.max_restart": { key: "ha.max_restart", value: 2 },
    "GET /settings/ha.max_relocate": { key: "ha.max_relocate", value: 1 },
    ...over,
  });

  test("groups, rules and every VM's HA state with counts against limits", async () => {
    const { ctx } = fakeCtx(answers());
    await haPage.render(ctx);
    assert.equal(ctx.view.querySelector("h1").textContent, "High availability");
    assert.equal(ctx.view.querySelector("[data-testid=ha-group-count]").textContent, "2 groups");
    const groups = ctx.view.querySelector("[data-testid=ha-groups]");
    assert.deepEqual(column(groups, "nodes"), ["node1:2, node2:1", "node3:0"]);
    assert.deepEqual(column(groups, "restricted"), ["no", "yes"]);
    assert.deepEqual(column(groups, "failback"), ["yes", "no"]);
    assert.deepEqual(column(groups, "vms"), ["1", "0"]);
    const rules = ctx.view.querySelector("[data-testid=ha-rules]");
    assert.deepEqual(column(rules, "vms"), ["db1, db2"]);
    assert.deepEqual(column(rules, "strict"), ["yes"]);
    const status = ctx.view.querySelector("[data-testid=ha-status]");
    assert.deepEqual(column(status, "ha_state"), ["started", "error"]);
    assert.deepEqual(column(status, "restarts"), ["1/2", "2/2"]);
    assert.deepEqual(column(status, "relocates"), ["0/3", "0/1"]);
    assert.deepEqual(column(status, "node"), ["node1", "–"]);
  });

  test("create a group: the nodes parsed, the body posted, the form closed", async () => {
    let groups = [group()];
    const { ctx, calls } = fakeCtx(
      answers({
        "GET /ha/groups": () => page(groups),
        "POST /ha/groups": (body) => {
          groups = [...groups, { ...group(), ...body, vms: 0 }];
          return groups.at(-1);
        },
      }),
    );
    await haPage.render(ctx);
    ctx.view.querySelector("[data-action=ha-group-create-open]").click();
    await settle();
    const form = ctx.view.querySelector("[data-testid=ha-group-create-form]");
    assert.ok(form, "the form opens");
    fill(form, "name", "batch");
    fill(form, "nodes", "node1:x");
    form.querySelector("[data-action=ha-group-create]").click();
    await settle();
    assert.match(errorBar(), /nodes: the priority of node1 is not a whole number/);
    assert.equal(form.querySelector('[data-error-for="nodes"]').hidden, false);
    assert.ok(!calls.some((c) => c.method === "POST"), "nothing sent");

    fill(form, "nodes", "node1:3, node2");
    form.querySelector("[name=restricted]").checked = true;
    fill(form, "description", " nightly ");
    form.querySelector("[data-action=ha-group-create]").click();
    await settle();
    assert.deepEqual(calls.find((c) => c.method === "POST").body, {
      name: "batch",
      nodes: { node1: 3, node2: 0 },
      restricted: true,
      nofailback: false,
      description: "nightly",
    });
    assert.equal(ctx.view.querySelector("[data-testid=ha-group-create-form]"), null, "closed once created");
    assert.deepEqual(column(ctx.view.querySelector("[data-testid=ha-groups]"), "name"), ["web", "batch"]);
  });

  test("edit a group sends only what changed; a rule edit its VMs", async () => {
    const { ctx, calls } = fakeCtx(
      answers({
        "PATCH /ha/groups/web": (body) => ({ ...group(), ...body }),
        "PATCH /ha/rules/dbs": (body) => ({ ...rule(), ...body }),
      }),
    );
    await haPage.render(ctx);
    ctx.view.querySelector('[data-group="web"] [data-action=ha-group-edit]').click();
    await settle();
    let form = ctx.view.querySelector("[data-testid=ha-group-edit-form]");
    assert.equal(form.querySelector("[name=nodes]").value, "node1:2, node2:1");
    assert.ok(form.querySelector("[name=name]").disabled);
    form.querySelector("[data-action=ha-group-save]").click();
    await settle();
    assert.equal(form.querySelector("[data-testid=ha-group-note]").textContent, "Nothing changed.");
    form.querySelector("[name=nofailback]").checked = true;
    form.querySelector("[data-action=ha-group-save]").click();
    await settle();
    assert.deepEqual(calls.find((c) => c.method === "PATCH").body, { nofailback: true });

    ctx.view.querySelector('[data-rule="dbs"] [data-action=ha-rule-edit]').click();
    await settle();
    form = ctx.view.querySelector("[data-testid=ha-rule-edit-form]");
    fill(form, "vms", "db1, db2, db3");
    form.querySelector("[name=kind]").value = "together";
    form.querySelector("[data-action=ha-rule-save]").click();
    await settle();
    assert.deepEqual(calls.filter((c) => c.method === "PATCH").at(-1), {
      method: "PATCH",
      path: "/ha/rules/dbs",
      body: { kind: "together", vms: ["db1", "db2", "db3"] },
    });
  });

  test("delete: the server's refusal of a group in use is shown as its line", async () => {
    const refused = new ApiError(409, "HA group web has 1 VM(s): web1; move them to another group first", null);
    const { ctx, calls } = fakeCtx(answers({ "DELETE /ha/groups/web": refused, "DELETE /ha/rules/dbs": null }));
    await haPage.render(ctx);
    ctx.view.querySelector('[data-group="web"] [data-action=ha-group-delete]').click();
    await settle();
    assert.match(fakeDocument.getElementById("confirm-text").textContent, /1 VM is in it/);
    assert.equal(errorBar(), refused.message);
    ctx.view.querySelector('[data-rule="dbs"] [data-action=ha-rule-delete]').click();
    await settle();
    assert.ok(calls.some((c) => c.method === "DELETE" && c.path === "/ha/rules/dbs"));
  });

  test("a reader sees everything and no control", async () => {
    const { ctx } = fakeCtx(answers(), { can: (a) => a !== "ha.manage" });
    await haPage.render(ctx);
    assert.equal(ctx.view.querySelectorAll("[data-testid=ha-group-row]").length, 2);
    assert.equal(ctx.view.querySelector("[data-action=ha-group-create-open]"), null);
    assert.equal(ctx.view.querySelector("[data-action=ha-rule-create-open]"), null);
    assert.equal(ctx.view.querySelector("[data-action=ha-group-delete]"), null);
  });
});

describe("a VM's HA fields", () => {
  test("facts: state, group, counts with limits", () => {
    const root = haFacts(vm());
    assert.equal(root.querySelector("dd[data-field=ha_state]").textContent, "started");
    assert.equal(root.querySelector("dd[data-field=ha_group] a").getAttribute("href"), "#/ha");
    assert.equal(root.querySelector("dd[data-field=ha_restarts]").textContent, "1 (limit the setting's)");
    assert.equal(root.querySelector("dd[data-field=ha_relocates]").textContent, "0 (limit 3)");
  });
  test("controls: only what changed; '' takes it out of its group; empty limits are null", () => {
    const controls = haControls(["web", "db"], vm());
    assert.deepEqual(controls.changes(), {});
    controls.root.querySelector("[name=ha_group]").value = "";
    controls.root.querySelector("[name=max_relocate]").value = "";
    controls.root.querySelector("[name=max_restart]").value = "4";
    assert.deepEqual(controls.changes(), { ha_group: "", max_restart: 4, max_relocate: null });
  });
  test("an error state is shown, and sent only when another is chosen", () => {
    const controls = haControls([], vm({ ha_state: "error", ha_group: "gone" }));
    const state = controls.root.querySelector("[name=ha_state]");
    assert.equal(state.value, "error");
    assert.deepEqual(controls.root.querySelectorAll("[name=ha_group] option").map((o) => o.value), ["", "gone"]);
    assert.deepEqual(controls.changes(), {});
    state.value = "started";
    assert.deepEqual(controls.changes(), { ha_state: "started" });
  });
});

describe("the node page's maintenance and shutdown policy", () => {
  beforeEach(() => resetShell());
  const node = (over = {}) => ({ name: "node1", maintenance: false, shutdown_policy: null, shutdown_policy_effective: "conditional", shutdown_kind: null, shutdown_at: null, ...over });

  test("maintenance on: confirmed, posted, its task named", async () => {
    const { ctx, calls } = fakeCtx({ "POST /nodes/node1/maintenance": { id: "t1", type: "drain" } });
    const result = fakeDocument.createElement("p");
    let refreshed = 0;
    const section = nodeHaSection(ctx, "node1", result, async () => void (refreshed += 1));
    section.update(node());
    assert.equal(section.root.querySelector("dd[data-field=maintenance]").textContent, "off");
    assert.equal(section.root.querySelector("dd[data-field=shutdown_policy]").textContent, "conditional (the setting ha.shutdown_policy)");
    section.root.querySelector("[data-action=node-maintenance-on]").click();
    await settle();
    assert.deepEqual(calls, [{ method: "POST", path: "/nodes/node1/maintenance", body: { on: true } }]);
    assert.match(fakeDocument.getElementById("confirm-text").textContent, /never fenced while maintenance is on/);
    assert.equal(result.textContent, "Maintenance on for node1: task t1 started.");
    assert.equal(refreshed, 1);
    section.update(node({ maintenance: true }));
    assert.ok(section.root.querySelector("[data-action=node-maintenance-off]"));
    assert.equal(section.root.querySelector("dd[data-field=maintenance]").textContent, "on");
  });

  test("the shutdown policy: PATCH with the choice; the setting's is null", async () => {
    const { ctx, calls } = fakeCtx({ "PATCH /nodes/node1": (body) => ({ ...node(), ...body }) });
    const section = nodeHaSection(ctx, "node1", fakeDocument.createElement("p"), async () => {});
    section.update(node({ shutdown_policy: "freeze", shutdown_kind: "reboot" }));
    assert.equal(section.root.querySelector("dd[data-field=shutdown_policy]").textContent, "freeze");
    assert.match(section.root.querySelector("dd[data-field=shutdown]").textContent, /^reboot/);
    const choice = section.root.querySelector("[name=shutdown_policy]");
    assert.equal(choice.value, "freeze");
    choice.value = "migrate";
    section.root.querySelector("[data-action=node-shutdown-policy-save]").click();
    await settle();
    choice.value = "";
    section.root.querySelector("[data-action=node-shutdown-policy-save]").click();
    await settle();
    assert.deepEqual(calls.map((c) => c.body), [{ shutdown_policy: "migrate" }, { shutdown_policy: null }]);
  });

  test("the permissions are the policy table's", () => {
    assert.equal(MAINTENANCE_PERMISSION, "node.flush");
    assert.equal(SHUTDOWN_POLICY_PERMISSION, "node.update");
  });

  test("without the permissions: the facts only", () => {
    const { ctx } = fakeCtx({}, { can: (a) => a !== MAINTENANCE_PERMISSION && a !== SHUTDOWN_POLICY_PERMISSION });
    const section = nodeHaSection(ctx, "node1", fakeDocument.createElement("p"), async () => {});
    section.update(node());
    assert.equal(section.root.querySelector("[data-action=node-maintenance-on]"), null);
    assert.equal(section.root.querySelector("[name=shutdown_policy]"), null);
    assert.ok(section.root.querySelector("[data-testid=node-ha-controls]").hidden);
  });
});
