// Unit tests of the pure helpers of the operations pages (tasks, events, commands,
// reconcile, settings): `node --test web/test/`.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { when } from "../../src/bollard/server/web/static/js/format.js";
import { OPEN, STATES, TERMINAL, errorText, outcome } from "../../src/bollard/server/web/static/pages/commands_parts.js";
import { matches } from "../../src/bollard/server/web/static/pages/events_parts.js";
import { shortId } from "../../src/bollard/server/web/static/pages/ops_parts.js";
import { meaningOf } from "../../src/bollard/server/web/static/pages/reconcile.js";
import { shown } from "../../src/bollard/server/web/static/pages/settings_parts.js";
import { attemptsText, undoText } from "../../src/bollard/server/web/static/pages/task_parts.js";

const NONE = { vm: "", node: "", task: "", actor: "", kind: "" };

/** @param {Record<string, any>} over */
function event(over = {}) {
  return { id: 1, at: "2026-01-01T00:00:00Z", kind: "vm.state", vm: "web1", vm_uuid: "u-1", node: "node1", task_id: "t-1", message: "", data: {}, actor: "admin", ...over };
}

describe("events: matches", () => {
  test("no filter passes everything", () => {
    assert.equal(matches(event(), NONE), true);
  });
  test("vm matches by name or uuid, nothing else", () => {
    assert.equal(matches(event(), { ...NONE, vm: "web1" }), true);
    assert.equal(matches(event(), { ...NONE, vm: "u-1" }), true);
    assert.equal(matches(event(), { ...NONE, vm: "web2" }), false);
    assert.equal(matches(event({ vm: null, vm_uuid: null }), { ...NONE, vm: "web1" }), false);
  });
  test("node, task and actor are exact", () => {
    assert.equal(matches(event(), { ...NONE, node: "node1", task: "t-1", actor: "admin" }), true);
    assert.equal(matches(event(), { ...NONE, node: "node" }), false);
    assert.equal(matches(event(), { ...NONE, task: "t-2" }), false);
    assert.equal(matches(event(), { ...NONE, actor: "system" }), false);
  });
  test("kind is contains, any case", () => {
    assert.equal(matches(event({ kind: "node.fence_failed" }), { ...NONE, kind: "FENC" }), true);
    assert.equal(matches(event({ kind: "vm.state" }), { ...NONE, kind: "node." }), false);
  });
});

describe("tasks: step retries and undo", () => {
  const step = { idx: 0, name: "move", state: "done", result: {}, commands: {}, error: null, started_at: null, finished_at: null, undo_started_at: null, undo_finished_at: null, undo_error: null, attempts: 0, retry_at: null };
  test("retries", () => {
    assert.equal(attemptsText(step), "");
    assert.equal(attemptsText({ ...step, attempts: 1 }), "1 retry");
    assert.equal(attemptsText({ ...step, attempts: 3 }), "3 retries");
    const at = "2026-01-01T10:20:30Z";
    assert.equal(attemptsText({ ...step, state: "waiting", attempts: 2, retry_at: at }), `retry 2 at ${when(at).slice(11)}`);
  });
  test("undo: error first, then finished, then started", () => {
    const at = "2026-01-01T10:20:30Z";
    assert.equal(undoText(step), "");
    assert.equal(undoText({ ...step, undo_started_at: at }), `undoing since ${when(at).slice(11)}`);
    assert.equal(undoText({ ...step, undo_started_at: at, undo_finished_at: at }), `undone at ${when(at).slice(11)}`);
    assert.equal(undoText({ ...step, undo_started_at: at, undo_error: "disk busy" }), "failed: disk busy");
  });
});

describe("commands", () => {
  const base = { id: "c", node: "n", type: "start", args: {}, vm_uuid: null, epoch: 1, task_id: null, state: "SENT", agent_state: null, answer: null, error: null, attempts: 0, deadline: null, created_at: "", updated_at: "" };
  test("outcome as `command list` says it", () => {
    assert.equal(outcome(base), "–");
    assert.equal(outcome({ ...base, answer: { ok: true } }), "ok");
    assert.equal(outcome({ ...base, answer: { ok: false, error: { code: "not_found", message: "gone" } } }), "failed: not_found");
    assert.equal(outcome({ ...base, answer: { ok: false } }), "failed: error");
  });
  test("the agent's error message first, else the server's", () => {
    assert.equal(errorText(base), null);
    assert.equal(errorText({ ...base, error: "timed out" }), "timed out");
    assert.equal(errorText({ ...base, error: "x", answer: { ok: false, error: { message: "gone" } } }), "gone");
  });
  test("open states are the states not terminal", () => {
    assert.deepEqual([...OPEN, ...TERMINAL].sort(), [...STATES].sort());
    assert.ok(OPEN.includes("RECONCILE_RETRY") && !OPEN.includes("COMPLETED"));
  });
});

describe("reconcile: meaning of a class from its setting's help", () => {
  test("the part between 'about' and ': report, or fix.'", () => {
    const help = "What the state reconciler does by itself about VMs on a host that the database does not have there (fix: destroy them on the host): report, or fix.";
    assert.equal(meaningOf(help), "VMs on a host that the database does not have there (fix: destroy them on the host)");
  });
  test("other text is kept whole", () => {
    assert.equal(meaningOf("Something else."), "Something else.");
  });
});

describe("small helpers", () => {
  test("shortId keeps the distinctive end", () => {
    assert.equal(shortId("01a2482f-8f8d-1101-4e7e-4915e2a7d046"), "…4915e2a7d046");
    assert.equal(shortId("abc"), "abc");
  });
  test("a setting's value as text", () => {
    assert.equal(shown(false), "false");
    assert.equal(shown(30), "30");
    assert.equal(shown(null), "–");
  });
});
