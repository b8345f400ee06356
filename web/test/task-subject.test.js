// Unit tests of what a task is about, as the task panel, the tasks page and a task's page
// name and link it (static/js/taskpanel.js): `node --test web/test/`.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { progressLine } from "../../src/bollard/server/web/static/js/format.js";
import { taskSubject, taskVolume } from "../../src/bollard/server/web/static/js/taskpanel.js";

/** A task as GET /api/v1/tasks gives it (the fields used here). @param {Record<string, any>} over */
function task(over = {}) {
  return { id: "t1", type: "volume_copy", vm: null, node: "node2", state: "running", params: {}, result: {}, ...over };
}

const VOLUME_TASKS = [
  "volume_create", "volume_delete", "volume_grow", "volume_attach", "volume_detach", "volume_copy",
  "volume_migrate", "snapshot_create", "snapshot_delete", "snapshot_revert",
];

describe("taskSubject", () => {
  test("a task of a VM is about the VM, whatever else it names", () => {
    const attach = task({ type: "volume_attach", vm: "web1", params: { volume_id: "0b7e", volume: "data1" } });
    assert.deepEqual(taskSubject(attach), { kind: "vm", name: "web1", route: "#/vms/web1" });
  });

  test("a volume task without a VM is about its volume (not the node it runs on)", () => {
    for (const type of VOLUME_TASKS) {
      const t = task({ type, params: { volume_id: "0b7e", volume: "data1" } });
      assert.deepEqual(taskSubject(t), { kind: "volume", name: "data1", route: "#/volumes/data1" }, type);
    }
  });

  test("the route escapes the name", () => {
    const t = task({ params: { volume: "a b#c" } });
    assert.equal(taskSubject(t)?.route, "#/volumes/a%20b%23c");
  });

  test("else its node, else nothing", () => {
    assert.deepEqual(taskSubject(task({ type: "flush", params: { node: "node2" } })), {
      kind: "node",
      name: "node2",
      route: "#/nodes/node2",
    });
    assert.equal(taskSubject(task({ node: null, params: null })), null);
  });

  test("a volume name that is not a non-empty string is not one", () => {
    for (const volume of ["", null, 7, { name: "x" }]) {
      assert.equal(taskVolume(task({ params: { volume } })), null, JSON.stringify(volume));
      assert.equal(taskSubject(task({ params: { volume } }))?.kind, "node");
    }
    assert.equal(taskVolume(task({ params: undefined })), null);
  });
});

describe("a volume copy's progress", () => {
  test("reads as a migration's: the step, then what the host says", () => {
    const copy = task({ result: { progress: { step: "copy", fraction: 0.405, message: "volume-copy: 41%" } } });
    assert.equal(progressLine(copy), "copy: volume-copy: 41%");
    const migration = task({ type: "migrate", result: { progress: { step: "live_migrate", fraction: 0.42, message: "migrate transfer: 42%" } } });
    assert.equal(progressLine(migration), "live_migrate: migrate transfer: 42%");
  });
});
