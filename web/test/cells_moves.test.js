// Unit tests of moving VMs between cells in the console: the helpers (static/pages/vm_move.js),
// the resize and migrate forms offering the nodes of every cell (vm_resize.js, vm_migrate.js),
// the VM page's resize panel and progress line of a move (vm_resize.js, vm.js), and a cell's
// weight multiplier on its page (cell.js, cell_parts.js), drawn into the fake DOM of
// web/fakes/browser.js with a fake API. `node --test web/test/`.
import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, test } from "node:test";

// The fake browser first: it installs the globals the console's modules read when imported.
import { errorBar, fakeCtx, fill, pick, resetShell, settle } from "../fakes/browser.js";

const { ApiError } = await import("../../src/bollard/server/web/static/js/api.js");
const { h } = await import("../../src/bollard/server/web/static/js/dom.js");
const move = await import("../../src/bollard/server/web/static/pages/vm_move.js");
const { openResize, resizePanel } = await import("../../src/bollard/server/web/static/pages/vm_resize.js");
const { openMigrate } = await import("../../src/bollard/server/web/static/pages/vm_migrate.js");
const vmPage = await import("../../src/bollard/server/web/static/pages/vm.js");
const cellPage = await import("../../src/bollard/server/web/static/pages/cell.js");
const { cellFacts, weightChange, weightText } = await import("../../src/bollard/server/web/static/pages/cell_parts.js");

// ---------------------------------------------------------------------------------------------
// Fixtures: answers as the API server gives them (an API server in front of cell1 and cell2).

const small = { id: "f1", name: "small", vcpus: 1, memory_mb: 256, disk_mb: 0, properties: {} };
const big = { id: "f2", name: "big", vcpus: 2, memory_mb: 512, disk_mb: 0, properties: {} };

/** A VM (VmOut through the API server). @param {Record<string, any>} over */
function vm(over = {}) {
  return {
    name: "web1",
    uuid: "u1",
    cell: "cell1",
    node: "cell1-node1",
    status: "ACTIVE",
    vm_state: "active",
    task_state: null,
    task_id: null,
    desired_power: "running",
    observed_power: "running",
    observed_at: "2026-01-01T00:00:00Z",
    observed_seq: 4,
    vcpus: 1,
    memory_mb: 256,
    observed_vcpus: 1,
    observed_memory_mb: 256,
    epoch: 1,
    fault: null,
    previous_node: null,
    ha: "restart",
    ha_priority: 0,
    autostart: false,
    migration_method: "default",
    node_limit: null,
    node_selector: null,
    on_lost: "none",
    disks: [],
    nics: [],
    flavor: small,
    resize: null,
    created_at: "2026-01-01T00:00:00Z",
    updated_at: "2026-01-01T00:00:00Z",
    reported_at: "2026-01-01T00:00:00Z",
    ...over,
  };
}

/** A move between cells as the VM shows it (`resize` with cross_cell). @param {Record<string, any>} over */
function crossResize(over = {}) {
  return {
    migration_id: "m1",
    source: "cell1-node1",
    dest: "cell2-node1",
    old_flavor: small,
    new_flavor: big,
    status: "finished",
    cross_cell: true,
    ...over,
  };
}

/** A node of `GET /nodes`. @param {string} name @param {string} cell @param {Record<string, any>} over */
function node(name, cell, over = {}) {
  return {
    name,
    cell,
    health: "up",
    connected: true,
    scheduling: "ready",
    capacity: { vcpus: 16, memory_mb: 32768 },
    allocated: { vcpus: 0, memory_mb: 0 },
    free: { vcpus: 16, memory_mb: 32768 },
    vm_count: 0,
    ...over,
  };
}

const NODES = {
  items: [
    node("cell1-node1", "cell1", { free: { vcpus: 15, memory_mb: 32512 }, vm_count: 1 }),
    node("cell1-node2", "cell1"),
    node("cell2-node2", "cell2", { scheduling: "draining" }),
    node("cell2-node1", "cell2"),
    { name: "cell3-node1", cell: "cell3", health: "unknown", unreachable: true },
  ],
  next_cursor: null,
  unreachable: [{ cell: "cell3", error: "did not answer within 5 s" }],
};

/** The VM's cell's candidates (`GET /vms/web1/migrate/candidates` through the API server). */
function candidates(over = {}) {
  return {
    vm: "web1",
    selector: "mem",
    chosen: "cell1-node2",
    ranking: [{ node: "cell1-node2", score: 0.5 }],
    rejected: [{ node: "cell1-node1", reason: "is the VM's current node" }],
    cell: "cell1",
    ...over,
  };
}

/** @param {string} key @param {string} value */
const setting = (key, value) => ({ key, value, default: "nobody", type: "str", cells: null });

/** A move's task (the API server's: cell null). @param {Record<string, any>} over */
function moveTask(over = {}) {
  const names = ["check", "copy_records", "stop_source", "export", "transfer", "spawn", "grow", "start_target", "flip"];
  const at = over.at ?? 4;
  delete over.at;
  return {
    id: "m1",
    type: "cross_cell_move",
    vm: "web1",
    node: null,
    cell: null,
    state: "running",
    result: { progress: { disk: "vda", phase: "push", fraction: 0.4 } },
    error: null,
    steps: names.map((name, idx) => ({ idx, name, state: idx < at ? "done" : idx === at ? "running" : "pending" })),
    ...over,
  };
}

beforeEach(() => {
  resetShell();
});

afterEach(() => {
  globalThis.window.location.hash = "#/";
});

// ---------------------------------------------------------------------------------------------

describe("move helpers", () => {
  test("who may: the setting's lowest role and those above it; nobody: no one", () => {
    assert.ok(move.mayMove("admin", "operator"));
    assert.ok(move.mayMove("operator", "operator"));
    assert.ok(!move.mayMove("reader", "operator"));
    assert.ok(move.mayMove("reader", "reader"));
    assert.ok(!move.mayMove("admin", "nobody"));
    assert.ok(!move.mayMove("admin", null));
    assert.equal(move.policyKey("migrate"), "policy.vm_migrate_cross_cell");
  });
  test("what the setting says of the caller", () => {
    assert.equal(move.policyText("resize", "operator", "admin"), "You may (role admin): the setting policy.vm_resize_cross_cell allows operators and admins.");
    assert.equal(
      move.policyText("migrate", "admin", "operator"),
      "Your role (operator) may not: the setting policy.vm_migrate_cross_cell allows admins only; the server refuses it (403).",
    );
    assert.equal(move.policyText("resize", "nobody", "admin"), "Nobody may now: the setting policy.vm_resize_cross_cell is nobody; the server refuses it (403).");
    assert.equal(move.policyText("resize", "reader", "reader"), "You may (role reader): the setting policy.vm_resize_cross_cell allows every role.");
    assert.equal(move.policyText("resize", null, "admin"), "", "an unreadable setting: the server decides");
  });
  test("the other cells' nodes: by cell and name, the VM's own cell and unanswered cells' left out, not ready ones with why", () => {
    const groups = move.otherCellTargets(NODES.items, "cell1");
    assert.deepEqual(
      groups.map((g) => [g.cell, g.nodes.map((n) => [n.name, n.why])]),
      [["cell2", [["cell2-node1", ""], ["cell2-node2", "draining"]]]],
    );
    assert.equal(groups[0].nodes[0].free, "16 vCPU, 32 GiB free");
    assert.equal(move.notReadyWhy({ health: "down", scheduling: "cordoned" }), "down, cordoned");
  });
  test("where a move's task is: its running step, the transfer's progress; else its state", () => {
    assert.equal(move.moveStep(moveTask()), "step 5 of 9: transfer, disk vda push 40%");
    assert.equal(move.moveStep(moveTask({ at: 5 })), "step 6 of 9: spawn", "the transfer's progress only while it transfers");
    assert.equal(move.moveStep(moveTask({ steps: null })), "disk vda push 40%");
    assert.equal(move.moveStep(moveTask({ steps: null, result: {}, state: "pending" })), "pending");
    const waiting = moveTask({ at: 3 });
    waiting.steps[3].state = "waiting";
    assert.equal(move.moveStep(waiting), "step 4 of 9: export (waiting)");
  });
  test("the cross-cell lines name both cells and nodes; an unknown cell is said so", () => {
    const m = { source: "cell1", target: "cell2", task: null };
    assert.equal(
      move.crossCellText(crossResize(), m),
      "A move between cells: from cell cell1 (cell1-node1) to cell cell2 (cell2-node1). Confirm deletes cell1's copy " +
        "(guest, disks, records) and the images; revert stops it in cell2, starts it again in cell1 and deletes cell2's copy.",
    );
    assert.match(move.crossCellText(crossResize(), { source: null, target: "cell2", task: null }), /^A move between cells: from another cell \(cell1-node1\)/);
    assert.equal(move.movingText(vm({ status: "RESIZE", resize: crossResize() }), m), "Moving from cell cell1 (cell1-node1) to cell cell2 (cell2-node1)");
    assert.equal(move.movingText(vm({ status: "REVERT_RESIZE", resize: crossResize() }), m), "Going back from cell cell2 (cell2-node1) to cell cell1 (cell1-node1)");
  });
  test("the move's task: its record's id while it moves; a confirm's once asked here; none while it waits", () => {
    assert.equal(move.moveTaskId(vm({ status: "RESIZE", resize: crossResize({ status: "migrating" }) })), "m1");
    assert.equal(move.moveTaskId(vm({ status: "VERIFY_RESIZE", resize: crossResize() })), null);
    assert.equal(move.moveTaskId(vm({ name: "other", status: "REVERT_RESIZE", resize: crossResize() })), null);
    move.rememberEndTask("other", { id: "t9" });
    assert.equal(move.moveTaskId(vm({ name: "other", status: "REVERT_RESIZE", resize: crossResize() })), "t9");
  });
});

describe("moveOf: what the VM page reads of a move", () => {
  test("the nodes' cells, once each per page, and the move's task", async () => {
    const { ctx, calls } = fakeCtx({
      "GET /nodes/cell1-node1": node("cell1-node1", "cell1"),
      "GET /nodes/cell2-node1": node("cell2-node1", "cell2"),
      "GET /tasks/m1": moveTask(),
    });
    const known = new Map();
    const moving = vm({ status: "RESIZE", task_state: "resize_migrating", resize: crossResize({ status: "migrating" }) });
    const got = await move.moveOf(ctx, moving, known);
    assert.deepEqual([got.source, got.target, got.task.id], ["cell1", "cell2", "m1"]);
    await move.moveOf(ctx, moving, known);
    assert.equal(calls.filter((c) => c.path.startsWith("/nodes/")).length, 2, "each node's cell is read once");
  });
  test("a node that cannot be read: the VM's own cell stands for the side it is on", async (t) => {
    const warn = t.mock.method(console, "warn", () => {});
    const { ctx } = fakeCtx({
      "GET /nodes/cell1-node1": new ApiError(404, "no node cell1-node1", "not-found"),
      "GET /nodes/cell2-node1": new ApiError(503, "cell cell2 did not answer", "unreachable"),
    });
    const waiting = vm({ cell: "cell2", node: "cell2-node1", status: "VERIFY_RESIZE", resize: crossResize() });
    const got = await move.moveOf(ctx, waiting, new Map());
    assert.deepEqual(got, { source: null, target: "cell2", task: null });
    assert.equal(warn.mock.callCount(), 2, "each failure is said in the console");
  });
  test("a VM in RESIZE whose answer has no resize: the newest open move of its API server's migration records", async () => {
    const records = {
      items: [
        { id: "old", vm: "web1", cell: null, status: "migrating", created_at: "2026-01-01T00:00:00Z" },
        { id: "m2", vm: "web1", cell: null, status: "migrating", created_at: "2026-01-02T00:00:00Z" },
        { id: "c1", vm: "web1", cell: "cell1", status: "migrating", created_at: "2026-01-03T00:00:00Z" },
        { id: "done", vm: "web1", cell: null, status: "confirmed", created_at: "2026-01-04T00:00:00Z" },
        { id: "w2", vm: "web2", cell: null, status: "migrating", created_at: "2026-01-05T00:00:00Z" },
      ],
    };
    const { ctx, calls } = fakeCtx({ "GET /migrations": records, "GET /tasks/m2": moveTask({ id: "m2" }) });
    const got = await move.moveOf(ctx, vm({ status: "RESIZE" }), new Map());
    assert.equal(got.task.id, "m2");
    assert.equal(got.source, "cell1");
    assert.ok(calls.some((c) => c.path === "/migrations"));
  });
  test("a resize within a cell, or none: nothing is read", async () => {
    const { ctx, calls } = fakeCtx({});
    assert.equal(await move.moveOf(ctx, vm(), new Map()), null);
    assert.equal(await move.moveOf(ctx, vm({ status: "VERIFY_RESIZE", resize: { ...crossResize(), cross_cell: false } }), new Map()), null);
    assert.equal(await move.moveOf(ctx, vm({ cell: undefined, status: "RESIZE" }), new Map()), null);
    assert.deepEqual(calls, []);
  });
});

// ---------------------------------------------------------------------------------------------

/** The answers the forms read through an API server. @param {Record<string, any>} more */
function formAnswers(more = {}) {
  return {
    "GET /flavors": { items: [small, big], next_cursor: null },
    "GET /vms/web1/migrate/candidates": candidates(),
    "GET /nodes": NODES,
    "GET /settings/policy.vm_resize_cross_cell": setting("policy.vm_resize_cross_cell", "operator"),
    "GET /settings/policy.vm_migrate_cross_cell": setting("policy.vm_migrate_cross_cell", "operator"),
    ...more,
  };
}

/** @param {any} box */
const groupsOf = (box) =>
  box.querySelectorAll("[data-testid=target-cell]").map((g) => [
    g.dataset.cell,
    g.querySelectorAll("input[name=to]").map((i) => `${i.value}${i.disabled ? " (disabled)" : ""}`),
  ]);

describe("the resize form through an API server", () => {
  test("offers its cell's candidates and every node of the other cells; a node of another cell says it moves the VM", async () => {
    const { ctx, calls } = fakeCtx(formAnswers({ "POST /vms/web1/resize": (body) => ({ vm: vm({ status: "RESIZE" }), task: { id: "m1", body } }) }));
    const box = h("div");
    let done = 0;
    await openResize(ctx, vm(), box, () => (done += 1));
    assert.deepEqual(groupsOf(box), [
      ["cell1", ["cell1-node2"]],
      ["cell2", ["cell2-node1", "cell2-node2 (disabled)"]],
    ]);
    const label = box.querySelector("[data-testid=resize-candidate][data-node=cell2-node2]");
    assert.match(label.textContent, /cannot take it: draining/);
    assert.match(box.querySelector("[data-testid=resize-cross-policy]").textContent, /You may \(role admin\): the setting policy\.vm_resize_cross_cell allows operators and admins/);
    const note = box.querySelector("[data-testid=resize-cross-note]");
    assert.ok(note.hidden);

    pick(box, "cell2-node1");
    assert.ok(!note.hidden);
    assert.match(note.textContent, /^cell2-node1 is in cell cell2: the VM moves between cells/);
    pick(box, "cell1-node2");
    assert.ok(note.hidden, "a node of its own cell: no note");
    pick(box, "cell2-node1");

    box.querySelector("select[name=flavor]").value = "big";
    box.querySelector("[data-action=vm-resize-submit]").click();
    await settle();
    assert.deepEqual(calls.find((c) => c.method === "POST").body, { flavor: "big", to: "cell2-node1" });
    assert.equal(done, 1);
    assert.equal(box.querySelector("[data-testid=resize-form]"), null, "the form closes once accepted");
  });

  test("a refusal (403, 422) shows the server's line; a field's part next to the field", async () => {
    const forbidden = "resize of VM web1 into cell cell2 needs permission vm:resize:cross_cell (setting policy.vm_resize_cross_cell); the admin token of user 'admin' does not have it";
    const answers = formAnswers({
      "GET /settings/policy.vm_resize_cross_cell": setting("policy.vm_resize_cross_cell", "nobody"),
      "POST /vms/web1/resize": new ApiError(403, forbidden, "forbidden"),
    });
    const { ctx } = fakeCtx(answers);
    const box = h("div");
    await openResize(ctx, vm(), box, () => {});
    assert.match(box.querySelector("[data-testid=resize-cross-policy]").textContent, /Nobody may now: the setting policy\.vm_resize_cross_cell is nobody/);
    pick(box, "cell2-node1");
    box.querySelector("[data-action=vm-resize-submit]").click();
    await settle();
    assert.equal(errorBar(), forbidden);
    assert.ok(box.querySelector("[data-testid=resize-form]"), "the form stays");

    answers["POST /vms/web1/resize"] = new ApiError(422, "to: cell2-node1 is not ready (draining)", "invalid-input");
    box.querySelector("[data-action=vm-resize-submit]").click();
    await settle();
    assert.equal(errorBar(), "to: cell2-node1 is not ready (draining)");
    const slot = box.querySelector("[data-error-for=to]");
    assert.ok(!slot.hidden);
    assert.equal(slot.textContent, "cell2-node1 is not ready (draining)");
  });

  test("a plain server: no cells, no extra reads", async () => {
    const { ctx, calls } = fakeCtx({
      "GET /flavors": { items: [small, big], next_cursor: null },
      "GET /vms/web1/migrate/candidates": candidates({ cell: undefined }),
    });
    const box = h("div");
    await openResize(ctx, vm({ cell: undefined }), box, () => {});
    assert.equal(box.querySelectorAll("[data-testid=target-cell]").length, 0);
    assert.equal(box.querySelector("[data-testid=resize-cross-policy]"), null);
    assert.deepEqual(box.querySelectorAll("input[name=to]").map((i) => i.value), ["", "cell1-node2", "*"]);
    assert.deepEqual(calls.map((c) => c.path), ["/flavors", "/vms/web1/migrate/candidates"]);
  });

  test("the other cells' nodes cannot be listed: said, and its own cell still offered", async () => {
    const { ctx } = fakeCtx(formAnswers({ "GET /nodes": new ApiError(0, "the server at bollard.test:8700 does not answer", "unreachable") }));
    const box = h("div");
    await openResize(ctx, vm(), box, () => {});
    assert.deepEqual(groupsOf(box), [["cell1", ["cell1-node2"]]]);
    assert.match(box.querySelector("[data-testid=resize-cross-policy]").textContent, /could not be listed: the server at bollard\.test:8700 does not answer/);
  });
});

describe("the migrate form through an API server", () => {
  test("a node of another cell sets the method to shutdown (live is not offered) and back after", async () => {
    const { ctx, calls } = fakeCtx(formAnswers({ "POST /vms/web1/migrate": (body) => ({ vm: vm({ status: "RESIZE" }), task: { id: "m1", body } }) }));
    const box = h("div");
    await openMigrate(ctx, "web1", box, () => {});
    assert.deepEqual(groupsOf(box), [
      ["cell1", ["cell1-node2"]],
      ["cell2", ["cell2-node1", "cell2-node2 (disabled)"]],
    ]);
    assert.match(box.querySelector("[data-testid=migrate-cross-policy]").textContent, /by a shutdown migration only\. You may/);
    const method = box.querySelector("select[name=method]");
    const live = method.querySelector("option[value=live]");
    const forceLive = box.querySelector("input[name=force_live]");
    const note = box.querySelector("[data-testid=migrate-cross-note]");
    method.value = "live";

    pick(box, "cell2-node1");
    assert.equal(method.value, "shutdown");
    assert.ok(live.disabled);
    assert.ok(forceLive.disabled);
    assert.match(note.textContent, /by a shutdown migration only .*A live migration never leaves its cell\./);
    assert.ok(!note.hidden);

    pick(box, "cell1-node2");
    assert.equal(method.value, "live", "the method chosen before comes back");
    assert.ok(!live.disabled && !forceLive.disabled);
    assert.ok(note.hidden);

    pick(box, "cell2-node1");
    box.querySelector("[data-action=vm-migrate-submit]").click();
    await settle();
    assert.deepEqual(calls.find((c) => c.method === "POST").body, { to: "cell2-node1", method: "shutdown" });
  });

  test("only the other cells can take it: Migrate is offered all the same", async () => {
    const { ctx } = fakeCtx(formAnswers({ "GET /vms/web1/migrate/candidates": candidates({ chosen: null, ranking: [] }) }));
    const box = h("div");
    await openMigrate(ctx, "web1", box, () => {});
    assert.ok(!box.querySelector("[data-action=vm-migrate-submit]").disabled);
    assert.match(box.querySelector("[data-testid=target-cell][data-cell=cell1]").textContent, /No other node of its cell can take it now/);
    assert.match(box.querySelector("[data-testid=migrate-candidate]").textContent, /no node of its cell can take it now/);
  });

  test("a refusal shows the server's line", async () => {
    const forbidden = "migrate of VM web1 into cell cell2 needs permission vm:migrate:cross_cell (setting policy.vm_migrate_cross_cell); user 'ops' (operator) does not have it";
    const { ctx } = fakeCtx(formAnswers({ "POST /vms/web1/migrate": new ApiError(403, forbidden, "forbidden") }));
    ctx.me.role = "operator";
    const box = h("div");
    await openMigrate(ctx, "web1", box, () => {});
    pick(box, "cell2-node1");
    box.querySelector("[data-action=vm-migrate-submit]").click();
    await settle();
    assert.equal(errorBar(), forbidden);
    assert.ok(box.querySelector("[data-testid=migrate-form]"));
  });
});

// ---------------------------------------------------------------------------------------------

describe("the resize panel of a move between cells", () => {
  test("VERIFY_RESIZE names both cells; Confirm asks, and its task is followed", async () => {
    const { ctx, calls } = fakeCtx({ "POST /vms/web1/resize/confirm": { vm: vm({ status: "VERIFY_RESIZE" }), task: { id: "t-confirm", type: "cross_cell_confirm" } } });
    const waiting = vm({ cell: "cell2", node: "cell2-node1", status: "VERIFY_RESIZE", flavor: big, resize: crossResize() });
    let refreshed = 0;
    const panel = resizePanel(ctx, waiting, () => (refreshed += 1), { source: "cell1", target: "cell2", task: null });
    assert.equal(panel.querySelector("h2").textContent, "Move between cells waiting for confirmation");
    const cross = panel.querySelector("[data-testid=resize-cross-cell]");
    assert.match(cross.textContent, /^A move between cells: from cell cell1 \(cell1-node1\) to cell cell2 \(cell2-node1\)\./);
    assert.deepEqual([cross.dataset.source, cross.dataset.target], ["cell1", "cell2"]);
    assert.match(panel.querySelector("[data-testid=resize-verify-text]").textContent, /^Resized from small on cell1-node1 to big on cell2-node1/);
    const confirm = panel.querySelector("[data-action=vm-resize-confirm]");
    assert.ok(!confirm.disabled);
    confirm.click();
    await settle();
    assert.ok(calls.some((c) => c.method === "POST" && c.path === "/vms/web1/resize/confirm"));
    assert.equal(refreshed, 1);
    assert.equal(move.moveTaskId({ ...waiting, task_state: "resize_confirming" }), "t-confirm");
  });

  test("a resize within a cell: no cross-cell line", () => {
    const { ctx } = fakeCtx({});
    const panel = resizePanel(ctx, vm({ status: "VERIFY_RESIZE", resize: { ...crossResize({ dest: "cell1-node2" }), cross_cell: undefined } }), () => {});
    assert.equal(panel.querySelector("h2").textContent, "Resize waiting for confirmation");
    assert.equal(panel.querySelector("[data-testid=resize-cross-cell]"), null);
  });

  test("RESIZE: where it moves and its task's progress", () => {
    const { ctx } = fakeCtx({});
    const moving = vm({ status: "RESIZE", task_state: "resize_migrating", resize: crossResize({ status: "migrating" }) });
    const panel = resizePanel(ctx, moving, () => {}, { source: "cell1", target: "cell2", task: moveTask() });
    assert.equal(panel.querySelector("h2").textContent, "Moving between cells");
    assert.equal(panel.querySelector("[data-testid=resize-cross-cell]").textContent, "Moving from cell cell1 (cell1-node1) to cell cell2 (cell2-node1).");
    const progress = panel.querySelector("[data-testid=resize-move-progress]");
    assert.equal(progress.textContent, "cross_cell_move: step 5 of 9: transfer, disk vda push 40%");
    assert.equal(progress.querySelector("a").getAttribute("href"), "#/tasks/m1");
  });
});

describe("the VM page while it moves between cells", () => {
  test("its progress line and resize panel follow the move's task", async () => {
    globalThis.window.location.hash = "#/vms/web1";
    const moving = vm({ status: "RESIZE", task_state: "resize_migrating", resize: crossResize({ status: "migrating" }) });
    const { ctx } = fakeCtx({
      "GET /vms/web1": moving,
      "GET /tasks": { items: [], next_cursor: null },
      "GET /events": { items: [], next_cursor: null },
      "GET /vms/web1/actions": { items: [], total: 0 },
      "GET /nodes/cell1-node1": node("cell1-node1", "cell1"),
      "GET /nodes/cell2-node1": node("cell2-node1", "cell2"),
      "GET /tasks/m1": moveTask(),
    });
    await vmPage.render(ctx, { name: "web1" });
    assert.equal(ctx.view.querySelector("[data-testid=vm-status]").textContent, "RESIZE");
    const progress = ctx.view.querySelector("[data-testid=vm-progress]");
    assert.ok(!progress.hidden);
    assert.equal(progress.textContent, "cross_cell_move: step 5 of 9: transfer, disk vda push 40%");
    const state = ctx.view.querySelector("[data-testid=resize-state]");
    assert.equal(state.querySelector("h2").textContent, "Moving between cells");
    assert.equal(state.querySelector("[data-testid=resize-cross-cell]").dataset.target, "cell2");
    assert.equal(ctx.view.querySelector("[data-action=vm-migrate]"), null, "no other action while it moves");
  });
});

// ---------------------------------------------------------------------------------------------

describe("a cell's weight multiplier", () => {
  /** A cell (CellOut, `GET /cells/NAME`). @param {Record<string, any>} over */
  const cell = (over = {}) => ({
    name: "cell2",
    url: "https://127.0.0.1:8702",
    disabled: false,
    state: "up",
    error: null,
    checked_at: "2026-01-01T00:00:00Z",
    latency_ms: 3,
    version: "0.9",
    database: "sqlite",
    weight_multiplier: null,
    nodes: 1,
    vms: 0,
    created_at: "2026-01-01T00:00:00Z",
    status: null,
    node_names: ["cell2-node1"],
    ...over,
  });

  test("shown as its number, 'default' when null, not at all when the answer has none", () => {
    assert.equal(weightText(null), "default");
    assert.equal(weightText(-1000000), "-1000000");
    assert.equal(weightText(undefined), null);
    const row = (c) => cellFacts(c, Date.now()).querySelector("dd[data-field=weight_multiplier]");
    assert.equal(row(cell()).textContent, "default");
    assert.equal(row(cell({ weight_multiplier: 2.5 })).textContent, "2.5");
    const older = cell();
    delete older.weight_multiplier;
    assert.equal(row(older), null);
  });

  test("the edit body: a number, empty for the default (null), unchanged left out, anything else as typed", () => {
    assert.deepEqual(weightChange(null, ""), {});
    assert.deepEqual(weightChange(null, " -1e6 "), { weight_multiplier: -1000000 });
    assert.deepEqual(weightChange(-1000000, "-1000000"), {});
    assert.deepEqual(weightChange(-1000000, ""), { weight_multiplier: null });
    assert.deepEqual(weightChange(undefined, "0"), { weight_multiplier: 0 });
    assert.deepEqual(weightChange(null, "lots"), { weight_multiplier: "lots" });
  });

  test("the page shows it and its edit form sets it, the server's refusal next to the field", async () => {
    globalThis.window.location.hash = "#/cells/cell2";
    const answers = {
      "GET /cells/cell2": cell(),
      "PATCH /cells/cell2": (body) => ({ ...cell(), ...body }),
    };
    const { ctx, calls } = fakeCtx(answers);
    await cellPage.render(ctx, { name: "cell2" });
    assert.equal(ctx.view.querySelector("[data-testid=cell-facts] dd[data-field=weight_multiplier]").textContent, "default");

    ctx.view.querySelector("[data-action=cell-edit]").click();
    await settle();
    let form = ctx.view.querySelector("[data-testid=cell-edit-form]");
    assert.equal(form.querySelector("[name=weight_multiplier]").value, "");
    fill(form, "weight_multiplier", "lots");
    answers["PATCH /cells/cell2"] = new ApiError(422, "weight_multiplier: must be a number", "invalid-input");
    form.querySelector("[data-action=cell-save]").click();
    await settle();
    assert.equal(errorBar(), "weight_multiplier: must be a number");
    assert.equal(form.querySelector("[data-error-for=weight_multiplier]").textContent, "must be a number");

    answers["PATCH /cells/cell2"] = (body) => ({ ...cell(), ...body });
    answers["GET /cells/cell2"] = cell({ weight_multiplier: -1000000 });
    fill(form, "weight_multiplier", "-1000000");
    form.querySelector("[data-action=cell-save]").click();
    await settle();
    assert.deepEqual(calls.filter((c) => c.method === "PATCH").at(-1).body, { weight_multiplier: -1000000 });
    assert.equal(ctx.view.querySelector("[data-testid=cell-edit-form]"), null, "the form closes once saved");
    assert.equal(ctx.view.querySelector("[data-testid=cell-facts] dd[data-field=weight_multiplier]").textContent, "-1000000");

    ctx.view.querySelector("[data-action=cell-edit]").click();
    await settle();
    form = ctx.view.querySelector("[data-testid=cell-edit-form]");
    assert.equal(form.querySelector("[name=weight_multiplier]").value, "-1000000");
    fill(form, "weight_multiplier", "");
    form.querySelector("[data-action=cell-save]").click();
    await settle();
    assert.deepEqual(calls.filter((c) => c.method === "PATCH").at(-1).body, { weight_multiplier: null }, "empty: back to the default");
  });
});
