// Unit tests of the console's cell parts: the pure helpers (static/pages/cell_parts.js), and
// the pages drawn into a small fake DOM (web/fakes/browser.js) with a fake API: the cells page
// and a cell's page (with the admin's forms), the Cell column and the partial items of a cell
// that did not answer in the VM and node tables, the warning naming such cells
// (static/js/unreachable.js) and the create-VM form's Cell select (static/pages/vm_create_cell.js).
// `node --test web/test/`.
import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, test } from "node:test";

// The fake browser first: it installs the globals the console's modules read when imported.
import { column, errorBar, fakeCtx, fakeDocument, fill, resetShell, settle, without } from "../fakes/browser.js";

const { ApiError } = await import("../../src/bollard/server/web/static/js/api.js");
const { h } = await import("../../src/bollard/server/web/static/js/dom.js");
const { UnreachableWatch } = await import("../../src/bollard/server/web/static/js/unreachable.js");
const parts = await import("../../src/bollard/server/web/static/pages/cell_parts.js");
const cellsPage = await import("../../src/bollard/server/web/static/pages/cells.js");
const cellPage = await import("../../src/bollard/server/web/static/pages/cell.js");
const vmsPage = await import("../../src/bollard/server/web/static/pages/vms.js");
const { matches } = await import("../../src/bollard/server/web/static/pages/nodes.js");
const { nodeTable } = await import("../../src/bollard/server/web/static/pages/nodes_table.js");
const { cellField } = await import("../../src/bollard/server/web/static/pages/vm_create_cell.js");

// ---------------------------------------------------------------------------------------------
// Fixtures: answers as the API server gives them (api20.md).

/** A cell (CellOut). @param {Record<string, any>} over */
function cell(over = {}) {
  return {
    name: "cell1",
    url: "https://127.0.0.1:8701",
    disabled: false,
    state: "up",
    error: null,
    checked_at: "2026-01-01T00:00:00Z",
    latency_ms: 3.14,
    version: "0.9",
    database: "sqlite",
    nodes: 2,
    vms: 17,
    created_at: "2026-01-01T00:00:00Z",
    ...over,
  };
}

const DOWN = cell({ name: "cell2", state: "unreachable", error: "did not answer within 5 s: connection refused", latency_ms: null, database: null, version: null, nodes: 1, vms: 1 });

/** A full VM of a cell. @param {Record<string, any>} over */
function vm(over = {}) {
  return {
    name: "web1",
    uuid: "u1",
    cell: "cell1",
    status: "ACTIVE",
    node: "cell1-node1",
    observed_power: "running",
    vcpus: 2,
    memory_mb: 1024,
    ha: "restart",
    ha_priority: 0,
    task_id: null,
    task_state: null,
    ...over,
  };
}

/** A VM of a cell that did not answer: only these fields. */
const PARTIAL_VM = { name: "db1", uuid: null, cell: "cell2", status: "UNKNOWN", unreachable: true };

/** A full node of a cell. @param {Record<string, any>} over */
function node(over = {}) {
  const r = (vcpus, memory_mb) => ({ vcpus, memory_mb });
  return {
    name: "cell1-node1",
    cell: "cell1",
    health: "up",
    connected: true,
    scheduling: "ready",
    capacity: r(8, 16384),
    allocated: r(2, 1024),
    free: r(6, 15360),
    vm_count: 1,
    last_heartbeat: "2026-01-01T00:00:00Z",
    driver: "sim",
    load: 0.1,
    power: { driver: null, address: null, credentials: false },
    ...over,
  };
}

const PARTIAL_NODE = { name: "cell2-node1", cell: "cell2", health: "unknown", unreachable: true };

beforeEach(() => {
  resetShell();
});

afterEach(() => {
  globalThis.window.location.hash = "#/";
});

// ---------------------------------------------------------------------------------------------

describe("cell helpers", () => {
  test("routes and paths escape the name", () => {
    assert.equal(parts.cellRoute("cell 1"), "#/cells/cell%201");
    assert.equal(parts.cellPath("a/b"), "/cells/a%2Fb");
  });
  test("the state's tone: up good, unreachable bad, unknown warn", () => {
    assert.equal(parts.cellTone("up"), "good");
    assert.equal(parts.cellTone("unreachable"), "bad");
    assert.equal(parts.cellTone("unknown"), "warn");
    assert.equal(parts.cellTone(null), "idle");
  });
  test("latency in ms, one decimal; none measured: –", () => {
    assert.equal(parts.latencyText(3.14), "3.1 ms");
    assert.equal(parts.latencyText(12), "12 ms");
    assert.equal(parts.latencyText(null), "–");
  });
  test("the mode: cells only when the status says so; an older server has none: single", () => {
    assert.equal(parts.modeOf({ mode: "cells" }), "cells");
    assert.equal(parts.modeOf({ mode: "single" }), "single");
    assert.equal(parts.modeOf({}), "single");
    assert.equal(parts.modeOf(null), "single");
  });
  test("serverMode asks GET /status; a status that cannot be read is single", async (t) => {
    t.mock.method(console, "warn", () => {});
    assert.equal(await parts.serverMode(fakeCtx({ "GET /status": { mode: "cells" } }).ctx.api), "cells");
    assert.equal(await parts.serverMode(fakeCtx({ "GET /status": { nodes: {} } }).ctx.api), "single");
    assert.equal(await parts.serverMode(fakeCtx({ "GET /status": new ApiError(0, "no answer", null) }).ctx.api), "single");
  });
  test("listCells: the items; a plain server's 404 is no cells; other failures are thrown", async () => {
    assert.deepEqual(await parts.listCells(fakeCtx({ "GET /cells": { items: [cell()], total: 1 } }).ctx.api), [cell()]);
    assert.equal(await parts.listCells(fakeCtx({ "GET /cells": new ApiError(404, "not found", null) }).ctx.api), null);
    await assert.rejects(parts.listCells(fakeCtx({ "GET /cells": new ApiError(500, "boom", null) }).ctx.api), /boom/);
  });
  test("the create body: trimmed; no CA is null", () => {
    assert.deepEqual(parts.cellCreateBody({ name: " cell3 ", url: " https://c3:8703 ", token: " t0k ", ca_pem: "  " }), {
      name: "cell3",
      url: "https://c3:8703",
      token: "t0k",
      ca_pem: null,
    });
    assert.equal(parts.cellCreateBody({ name: "c", url: "u", token: "t", ca_pem: "\n-----BEGIN CERTIFICATE-----\nx\n" }).ca_pem, "-----BEGIN CERTIFICATE-----\nx");
  });
  test("the edit body: what changed or was typed; the token and the CA only when typed", () => {
    const before = cell();
    assert.deepEqual(parts.cellChanges(before, { url: before.url, token: "", ca_pem: "", disabled: false }), {});
    assert.deepEqual(parts.cellChanges(before, { url: "https://10.0.0.9:8701 ", token: " new ", ca_pem: "PEM", disabled: true }), {
      url: "https://10.0.0.9:8701",
      token: "new",
      ca_pem: "PEM",
      disabled: true,
    });
    assert.deepEqual(parts.cellChanges(cell({ disabled: true }), { url: before.url, token: "", ca_pem: "", disabled: false }), { disabled: false });
  });
  test("deleting: says what stays, and that a cell with nodes or VMs is refused", () => {
    assert.match(parts.deleteCellText(cell({ nodes: 0, vms: 0 })), /^Delete cell cell1\? .*not touched\.$/);
    assert.match(parts.deleteCellText(cell({ nodes: 1, vms: 3 })), /still has 1 node and 3 VMs: the server refuses/);
  });
  test("live events: cell events only, of the cell named", () => {
    assert.ok(parts.concernsCell({ kind: "cell.state", data: { cell: "cell2" } }));
    assert.ok(parts.concernsCell({ kind: "cell.state", data: { cell: "cell2" } }, "cell2"));
    assert.ok(!parts.concernsCell({ kind: "cell.state", data: { cell: "cell2" } }, "cell1"));
    assert.ok(!parts.concernsCell({ kind: "vm.created", data: {} }));
  });
  test("the create form's cell options: the server's choice first, then by name; a disabled cell cannot be chosen", () => {
    const options = parts.cellOptions([cell({ name: "cell2", disabled: true, nodes: 1 }), cell()]);
    assert.deepEqual(
      options.map((o) => [o.value, o.disabled]),
      [["", false], ["cell1", false], ["cell2", true]],
    );
    assert.equal(options[1].label, "cell1 (up, 2 nodes)");
    assert.equal(options[2].label, "cell2 (disabled: no new VMs, 1 node)");
  });
  test("unreachable cells merged from several answers: each once, the last error, by name", () => {
    assert.deepEqual(
      parts.mergeUnreachable([
        [{ cell: "cell3", error: "a" }],
        [{ cell: "cell2", error: "b" }, { cell: "cell3", error: "c" }],
      ]),
      [{ cell: "cell2", error: "b" }, { cell: "cell3", error: "c" }],
    );
  });
  test("the Cell fact of a VM or node page only when the answer names a cell", () => {
    assert.deepEqual(parts.cellFact({}), []);
    const [[label, value, field]] = parts.cellFact({ cell: "cell2" });
    assert.equal(label, "Cell");
    assert.equal(field, "cell");
    assert.equal(value.getAttribute("href"), "#/cells/cell2");
  });
});

describe("the cells table", () => {
  test("one row a cell: state coloured, latency, database, URL, error", () => {
    const root = parts.cellTable([cell(), DOWN, cell({ name: "cell3", state: "unknown", disabled: true, checked_at: null, latency_ms: null })]);
    const rows = root.querySelectorAll("[data-testid=cell-row]");
    assert.deepEqual(rows.map((r) => [r.dataset.cell, r.dataset.state]), [["cell1", "up"], ["cell2", "unreachable"], ["cell3", "unknown"]]);
    const badges = root.querySelectorAll("td[data-field=state] .badge").map((b) => [b.textContent, b.getAttribute("class")]);
    assert.deepEqual(badges, [
      ["up", "badge good"],
      ["unreachable", "badge bad"],
      ["unknown", "badge warn"],
      ["disabled", "badge idle"],
    ]);
    assert.deepEqual(column(root, "nodes"), ["2", "1", "2"]);
    assert.deepEqual(column(root, "vms"), ["17", "1", "17"]);
    assert.deepEqual(column(root, "latency"), ["3.1 ms", "–", "–"]);
    assert.deepEqual(column(root, "database"), ["sqlite", "–", "sqlite"]);
    assert.deepEqual(column(root, "url"), [cell().url, DOWN.url, cell().url]);
    assert.deepEqual(column(root, "error"), ["", DOWN.error, ""]);
    assert.equal(root.querySelector("[data-cell=cell2] td[data-field=name] a").getAttribute("href"), "#/cells/cell2");
    assert.equal(root.querySelectorAll("td[data-field=actions]").length, 0);
  });
  test("no cells: says how to add one", () => {
    assert.match(parts.cellTable([]).textContent, /No cells yet/);
  });
});

describe("the cells page", () => {
  test("lists the cells; an admin adds one (token in a password field) and goes to its page", async () => {
    globalThis.window.location.hash = "#/cells";
    const added = cell({ name: "cell3" });
    const { ctx, calls, went } = fakeCtx({ "GET /cells": { items: [cell(), DOWN], total: 2 }, "POST /cells": () => added });
    await cellsPage.render(ctx);
    assert.equal(ctx.view.querySelector("h1").textContent, "Cells");
    assert.equal(ctx.view.querySelector("[data-testid=cell-count]").textContent, "2 cells, 1 up");
    assert.equal(ctx.view.querySelectorAll("[data-testid=cell-row]").length, 2);
    assert.equal(ctx.view.querySelectorAll("button[data-action=cell-delete]").length, 2);

    ctx.view.querySelector("[data-action=cell-create-open]").click();
    await settle();
    const form = ctx.view.querySelector("[data-testid=cell-create-form]");
    assert.ok(form, "the form opens");
    assert.equal(form.querySelector("[name=token]").getAttribute("type"), "password");
    assert.equal(form.querySelector("[name=ca_pem]").tagName, "TEXTAREA");
    fill(form, "name", "cell3");
    fill(form, "url", "https://127.0.0.1:8703");
    fill(form, "token", "s3cret");
    form.querySelector("[data-action=cell-create]").click();
    await settle();
    assert.equal(errorBar(), null);
    assert.deepEqual(calls.at(-1), {
      method: "POST",
      path: "/cells",
      body: { name: "cell3", url: "https://127.0.0.1:8703", token: "s3cret", ca_pem: null },
    });
    assert.deepEqual(went, ["#/cells/cell3"]);
  });

  test("a refused cell: the server's one line, each part next to its field", async () => {
    globalThis.window.location.hash = "#/cells";
    const refused = new ApiError(422, "token: cell3: https://127.0.0.1:8703: 401 unknown token", null);
    const { ctx, went } = fakeCtx({ "GET /cells": { items: [], total: 0 }, "POST /cells": refused });
    await cellsPage.render(ctx);
    ctx.view.querySelector("[data-action=cell-create-open]").click();
    await settle();
    const form = ctx.view.querySelector("[data-testid=cell-create-form]");
    form.querySelector("[data-action=cell-create]").click();
    await settle();
    assert.equal(errorBar(), refused.message);
    const slot = form.querySelector('[data-error-for="token"]');
    assert.equal(slot.hidden, false);
    assert.match(slot.textContent, /401 unknown token/);
    assert.deepEqual(went, []);
  });

  test("delete after the confirmation; the list is read again", async () => {
    globalThis.window.location.hash = "#/cells";
    let cells = [cell(), DOWN];
    const { ctx, calls } = fakeCtx({
      "GET /cells": () => ({ items: cells, total: cells.length }),
      "DELETE /cells/cell2": () => {
        cells = [cell()];
        return null;
      },
    });
    await cellsPage.render(ctx);
    ctx.view.querySelector("[data-cell=cell2] [data-action=cell-delete]").click();
    await settle();
    assert.ok(calls.some((c) => c.method === "DELETE" && c.path === "/cells/cell2"));
    assert.deepEqual(ctx.view.querySelectorAll("[data-testid=cell-row]").map((r) => r.dataset.cell), ["cell1"]);
    assert.match(fakeDocument.getElementById("confirm-text").textContent, /still has 1 node and 1 VM/);
  });

  test("a plain server (404): says it has no cells", async () => {
    globalThis.window.location.hash = "#/cells";
    const { ctx } = fakeCtx({ "GET /cells": new ApiError(404, "not found", null) });
    await cellsPage.render(ctx);
    assert.match(ctx.view.querySelector("[data-testid=no-cells]").textContent, /plain server/);
    assert.equal(ctx.view.querySelector("[data-action=cell-create-open]"), null);
  });

  test("a reader sees the cells and no control", async () => {
    globalThis.window.location.hash = "#/cells";
    const { ctx } = fakeCtx({ "GET /cells": { items: [cell()], total: 1 } }, { can: (a) => a !== "cell.manage" });
    await cellsPage.render(ctx);
    assert.equal(ctx.view.querySelectorAll("[data-testid=cell-row]").length, 1);
    assert.equal(ctx.view.querySelector("[data-action=cell-create-open]"), null);
    assert.equal(ctx.view.querySelector("[data-action=cell-delete]"), null);
  });
});

describe("a cell's page", () => {
  const detail = (over = {}) => ({
    ...cell(),
    status: { nodes: { total: 2, connected: 2 }, vms: { total: 3, by_status: { ACTIVE: 2, SHUTOFF: 1, ERROR: 0 } }, tasks_running: 1, maintenance: false },
    node_names: ["cell1-node1", "cell1-node2"],
    ...over,
  });

  test("its facts, its own status counts, its nodes linking to their pages", async () => {
    globalThis.window.location.hash = "#/cells/cell1";
    const { ctx } = fakeCtx({ "GET /cells/cell1": detail() });
    await cellPage.render(ctx, { name: "cell1" });
    const facts = ctx.view.querySelector("[data-testid=cell-facts]");
    assert.equal(facts.querySelector("dd[data-field=url]").textContent, cell().url);
    assert.equal(facts.querySelector("dd[data-field=state] .badge").getAttribute("class"), "badge good");
    assert.equal(facts.querySelector("dd[data-field=latency]").textContent, "3.1 ms");
    assert.equal(facts.querySelector("dd[data-field=database]").textContent, "sqlite");
    assert.equal(facts.querySelector("dd[data-field=error]"), null);
    const status = ctx.view.querySelector("[data-testid=cell-status]");
    assert.equal(status.querySelector("dd[data-field=nodes-connected]").textContent, "2 / 2");
    assert.deepEqual(status.querySelectorAll("li").map((li) => li.dataset.status), ["ACTIVE", "SHUTOFF"]);
    assert.equal(status.querySelector("dd[data-field=tasks-running]").textContent, "1");
    const links = ctx.view.querySelectorAll("[data-testid=cell-nodes] a").map((a) => a.getAttribute("href"));
    assert.deepEqual(links, ["#/nodes/cell1-node1", "#/nodes/cell1-node2"]);
    assert.equal(ctx.view.querySelector("#cell-nodes-h").textContent, "Nodes (2)");
  });

  test("a cell that did not answer: its error, no counts", async () => {
    globalThis.window.location.hash = "#/cells/cell2";
    const { ctx } = fakeCtx({ "GET /cells/cell2": { ...DOWN, status: null, node_names: ["cell2-node1"] } });
    await cellPage.render(ctx, { name: "cell2" });
    assert.equal(ctx.view.querySelector("[data-testid=cell-state]").dataset.state, "unreachable");
    assert.equal(ctx.view.querySelector("dd[data-field=error]").textContent, DOWN.error);
    assert.match(ctx.view.querySelector("[data-testid=cell-status]").textContent, /did not answer: no counts/);
  });

  test("edit: only what changed is sent; the token only when typed", async () => {
    globalThis.window.location.hash = "#/cells/cell1";
    const { ctx, calls } = fakeCtx({ "GET /cells/cell1": detail(), "PATCH /cells/cell1": (body) => ({ ...cell(), ...body }) });
    await cellPage.render(ctx, { name: "cell1" });
    ctx.view.querySelector("[data-action=cell-edit]").click();
    await settle();
    let form = ctx.view.querySelector("[data-testid=cell-edit-form]");
    assert.equal(form.querySelector("[name=url]").value, cell().url);
    assert.equal(form.querySelector("[name=token]").getAttribute("type"), "password");
    assert.equal(form.querySelector("[name=token]").value, "");
    form.querySelector("[data-action=cell-save]").click();
    await settle();
    assert.equal(form.querySelector("[data-testid=cell-edit-note]").textContent, "Nothing changed.");
    assert.ok(!calls.some((c) => c.method === "PATCH"));

    form.querySelector("[name=disabled]").checked = true;
    fill(form, "token", "new-token");
    form.querySelector("[data-action=cell-save]").click();
    await settle();
    assert.deepEqual(calls.find((c) => c.method === "PATCH").body, { token: "new-token", disabled: true });
    form = ctx.view.querySelector("[data-testid=cell-edit-form]");
    assert.equal(form, null, "the form closes once saved");
  });

  test("delete after the confirmation goes back to the cells", async () => {
    globalThis.window.location.hash = "#/cells/cell1";
    const { ctx, went, calls } = fakeCtx({ "GET /cells/cell1": detail({ nodes: 0, vms: 0 }), "DELETE /cells/cell1": null });
    await cellPage.render(ctx, { name: "cell1" });
    ctx.view.querySelector("[data-action=cell-delete]").click();
    await settle();
    assert.ok(calls.some((c) => c.method === "DELETE"));
    assert.deepEqual(went, ["#/cells"]);
  });

  test("no such cell: says so, without actions", async () => {
    globalThis.window.location.hash = "#/cells/nope";
    const { ctx } = fakeCtx({ "GET /cells/nope": new ApiError(404, "no cell named nope", null) });
    await cellPage.render(ctx, { name: "nope" });
    assert.equal(ctx.view.querySelector("[data-testid=cell-gone]").hidden, false);
    assert.equal(ctx.view.querySelector("[data-action=cell-edit]"), null);
  });
});

describe("the node table through an API server", () => {
  test("a Cell column; a node of a cell that did not answer: its health, – elsewhere, no link", () => {
    const root = nodeTable([node(), PARTIAL_NODE], new Map([["cell1-node1", 1024]]), { extra: true });
    const heads = root.querySelectorAll("th").map((th) => th.textContent);
    assert.deepEqual(heads.slice(0, 3), ["Name", "Cell", "Health"]);
    const partial = root.querySelector('[data-node="cell2-node1"]');
    assert.equal(partial.querySelector("td[data-field=name] a"), null, "no link to a page that would fail");
    assert.equal(partial.querySelector("td[data-field=name]").textContent, "cell2-node1");
    assert.equal(partial.querySelector("td[data-field=cell] a").getAttribute("href"), "#/cells/cell2");
    assert.equal(partial.querySelector("td[data-field=health]").textContent, "unknown");
    for (const field of ["scheduling", "connected", "vcpus", "memory", "provisioned", "vms", "driver", "load", "power", "heartbeat"]) {
      assert.equal(partial.querySelector(`td[data-field=${field}]`).textContent, "–", field);
    }
    const full = root.querySelector('[data-node="cell1-node1"]');
    assert.equal(full.querySelector("td[data-field=name] a").getAttribute("href"), "#/nodes/cell1-node1");
    assert.match(full.querySelector("td[data-field=vcpus]").textContent, /2 \/ 8 vCPU/);
  });
  test("a plain server's nodes: no Cell column", () => {
    const plain = without(node(), "cell");
    const heads = nodeTable([plain], new Map()).querySelectorAll("th").map((th) => th.textContent);
    assert.ok(!heads.includes("Cell"));
  });
  test("the nodes filter reads a partial node without breaking, and matches its cell", () => {
    assert.ok(matches(PARTIAL_NODE, "cell2 unknown"));
    assert.ok(!matches(PARTIAL_NODE, "ready"));
    assert.ok(matches(node(), "cell1 connected"));
  });
});

describe("the VM list through an API server", () => {
  test("a Cell column; a VM of a cell that did not answer: UNKNOWN, – elsewhere, no link", async () => {
    globalThis.window.location.hash = "#/vms";
    const { ctx } = fakeCtx({
      "GET /vms": { items: [vm(), PARTIAL_VM], total: 2, next_cursor: null, unreachable: [{ cell: "cell2", error: "no answer" }] },
      "GET /nodes": { items: [node(), PARTIAL_NODE], total: 2, next_cursor: null, unreachable: [] },
    });
    await vmsPage.render(ctx);
    const table = ctx.view.querySelector("[data-testid=vm-table]");
    const heads = table.querySelectorAll("th").map((th) => th.textContent);
    assert.deepEqual(heads.slice(1, 4), ["Name", "Cell", "Status"]);
    const partial = table.querySelector('[data-vm="db1"]');
    assert.equal(partial.dataset.status, "UNKNOWN");
    assert.equal(partial.querySelector("td[data-field=name] a"), null);
    assert.match(partial.querySelector("td[data-field=name] span").getAttribute("title"), /cell cell2 did not answer/);
    assert.equal(partial.querySelector("td[data-field=cell]").textContent, "cell2");
    for (const field of ["node", "power", "vcpus", "memory", "ha", "task"]) {
      assert.equal(partial.querySelector(`td[data-field=${field}]`).textContent, "–", field);
    }
    const full = table.querySelector('[data-vm="web1"]');
    assert.equal(full.querySelector("td[data-field=name] a").getAttribute("href"), "#/vms/web1");
    assert.equal(full.querySelector("td[data-field=cell] a").getAttribute("href"), "#/cells/cell1");
    assert.equal(full.querySelector("td[data-field=memory]").textContent, "1 GiB");
    assert.equal(ctx.view.querySelector("[data-testid=vm-count]").textContent, "2 VMs");
  });
  test("a plain server's VMs: no Cell column", async () => {
    globalThis.window.location.hash = "#/vms";
    const plain = without(vm(), "cell");
    const { ctx } = fakeCtx({
      "GET /vms": { items: [plain], total: 1, next_cursor: null },
      "GET /nodes": { items: [], total: 0, next_cursor: null },
    });
    await vmsPage.render(ctx);
    const heads = ctx.view.querySelectorAll("[data-testid=vm-table] th").map((th) => th.textContent);
    assert.ok(!heads.includes("Cell"));
  });
});

describe("the warning naming the cells that did not answer", () => {
  /** A watch on a fake API whose answers the test sets. */
  function watched() {
    const el = h("div", { hidden: true });
    const watch = new UnreachableWatch(el);
    const answers = {};
    const { ctx } = fakeCtx(answers);
    watch.observe(ctx.api);
    return { el, watch, answers, api: ctx.api };
  }

  test("a list's answer naming cells shows each with its error and a link to its page", async () => {
    const { el, answers, api } = watched();
    answers["GET /vms"] = { items: [], unreachable: [{ cell: "cell2", error: "did not answer within 5 s" }] };
    answers["GET /nodes"] = { items: [], unreachable: [{ cell: "cell3", error: "503" }, { cell: "cell2", error: "did not answer within 5 s" }] };
    await api.get("/vms");
    await api.all("/nodes");
    assert.equal(el.hidden, false);
    const items = el.querySelectorAll("li");
    assert.deepEqual(items.map((li) => li.dataset.cell), ["cell2", "cell3"]);
    assert.equal(items[0].textContent, "cell2: did not answer within 5 s");
    assert.equal(items[1].querySelector("a").getAttribute("href"), "#/cells/cell3");
    assert.match(el.textContent, /2 cells did not answer/);
  });

  test("it goes when the same lists answer with every cell again", async () => {
    const { el, answers, api } = watched();
    answers["GET /vms"] = { items: [], unreachable: [{ cell: "cell2", error: "x" }] };
    await api.get("/vms");
    assert.equal(el.hidden, false);
    answers["GET /vms"] = { items: [], unreachable: [] };
    await api.get("/vms");
    assert.equal(el.hidden, true);
    assert.equal(el.childNodes.length, 0);
  });

  test("answers without `unreachable` (a plain server), other methods and errors change nothing", async () => {
    const { el, answers, api } = watched();
    answers["GET /vms"] = { items: [], total: 0 };
    answers["POST /vms"] = { unreachable: [{ cell: "cell2", error: "x" }] };
    answers["GET /nodes"] = new ApiError(503, "cell cell2 did not answer within 5 s", "cell-unreachable");
    await api.get("/vms");
    await api.post("/vms", {});
    await assert.rejects(api.get("/nodes"));
    assert.equal(el.hidden, true);
  });

  test("a new page starts without it; an answer to the page left behind is not taken", async () => {
    const { el, watch, answers } = watched();
    let release = () => {};
    const { ctx } = fakeCtx(answers);
    answers["GET /events"] = () => new Promise((resolve) => (release = () => resolve({ items: [], unreachable: [{ cell: "cell2", error: "x" }] })));
    watch.observe(ctx.api);
    const pending = ctx.api.get("/events");
    await settle();
    watch.reset();
    release();
    await pending;
    assert.equal(el.hidden, true);
    assert.deepEqual(watch.cells(), []);
  });
});

describe("the create-VM form's Cell select", () => {
  test("offers the cells; choosing one leaves only its nodes choosable", () => {
    const nodeSelect = h(
      "select",
      { name: "node" },
      h("option", { value: "" }, "the scheduler chooses"),
      h("option", { value: "cell1-node1" }, "cell1-node1"),
      h("option", { value: "cell2-node1", selected: true }, "cell2-node1"),
    );
    const field = cellField([cell(), cell({ name: "cell2" }), cell({ name: "cell3", disabled: true })], nodeSelect, [
      { name: "cell1-node1", cell: "cell1" },
      { name: "cell2-node1", cell: "cell2" },
    ]);
    const select = field.root.querySelector("select[name=cell]");
    assert.deepEqual(select.querySelectorAll("option").map((o) => [o.value, o.disabled]), [
      ["", false],
      ["cell1", false],
      ["cell2", false],
      ["cell3", true],
    ]);
    assert.equal(field.value(), "");
    select.value = "cell1";
    select.dispatch("change");
    assert.equal(field.value(), "cell1");
    const disabled = nodeSelect.querySelectorAll("option").filter((o) => o.disabled).map((o) => o.value);
    assert.deepEqual(disabled, ["cell2-node1"]);
    assert.equal(nodeSelect.value, "", "a node of another cell is no longer chosen");
    select.value = "";
    select.dispatch("change");
    assert.deepEqual(nodeSelect.querySelectorAll("option").filter((o) => o.disabled), []);
  });
});

describe("the overview's Cells card", () => {
  test("how many are up, and each cell with its state", () => {
    const box = h("div", null, parts.cellsCard([{ name: "cell1", state: "up", error: null }, { name: "cell2", state: "unreachable", error: "refused" }]));
    assert.equal(box.querySelector("[data-field=cells-up]").textContent, "1 / 2");
    const items = box.querySelectorAll("li");
    assert.deepEqual(items.map((li) => [li.dataset.cell, li.dataset.state]), [["cell1", "up"], ["cell2", "unreachable"]]);
    assert.equal(items[1].getAttribute("title"), "refused");
    assert.equal(items[1].querySelector(".badge").getAttribute("class"), "badge bad");
  });
});
