// Unit tests of what the console shows about resizes, migration records, a node's
// allocations (static/pages/resize_parts.js) and a VM's instance actions
// (static/pages/action_parts.js): `node --test web/test/`.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { eventsRowId, resultTone, shortRequest, tookText } from "../../src/bollard/server/web/static/pages/action_parts.js";
import {
  RESIZE_STATUSES,
  allocationSummary,
  decidable,
  flavorChange,
  holdText,
  migrationOpen,
  migrationTone,
  migrationsRoute,
  resizeLine,
  routeText,
  statusTone,
  undecidableWhy,
  verifyText,
  vmOfQuery,
} from "../../src/bollard/server/web/static/pages/resize_parts.js";

const small = { id: "f1", name: "small", vcpus: 1, memory_mb: 512, disk_mb: 0, properties: {} };
const large = { id: "f2", name: "large", vcpus: 2, memory_mb: 2048, disk_mb: 0, properties: {} };
const custom = { id: null, name: null, vcpus: 1, memory_mb: 256, disk_mb: 0, properties: {} };

/** A VM's open resize (VmOut.resize). @param {Record<string, any>} over */
const resize = (over = {}) => ({
  migration_id: "m1",
  source: "node1",
  dest: "node2",
  old_flavor: small,
  new_flavor: large,
  status: "finished",
  finished_at: "2025-01-01T00:00:00Z",
  ...over,
});

describe("the confirm-or-revert panel", () => {
  test("says where from, where to, and what confirm and revert do", () => {
    assert.equal(
      verifyText(resize()),
      "Resized from small on node1 to large on node2: confirm (deletes the old copy) or revert (back to node1 at small)",
    );
  });
  test("a size by hand is 'custom'", () => {
    assert.equal(
      verifyText(resize({ old_flavor: custom })),
      "Resized from custom on node1 to large on node2: confirm (deletes the old copy) or revert (back to node1 at custom)",
    );
  });
  test("on the same node (resize.allow_same_node): no move to speak of", () => {
    assert.equal(
      verifyText(resize({ dest: "node1" })),
      "Resized from small to large on node1: confirm (deletes the old copy) or revert (back to small)",
    );
  });
});

describe("when confirm and revert can be asked for", () => {
  const waiting = { status: "VERIFY_RESIZE", task_id: null, task_state: null, resize: resize() };
  test("in VERIFY_RESIZE, its task ended and its record finished", () => {
    assert.ok(decidable(waiting));
    assert.equal(undecidableWhy(waiting), "");
  });
  test("not while the resize's task still ends (the status is VERIFY_RESIZE already)", () => {
    const ending = { ...waiting, task_id: "t1", task_state: "resize_finish" };
    assert.ok(!decidable(ending));
    assert.equal(undecidableWhy(ending), "The resize is ending (resize_finish): confirm and revert come when its task has.");
  });
  test("not while it is being confirmed", () => {
    const confirming = { ...waiting, task_id: "t2", task_state: "resize_confirming", resize: resize({ status: "confirming" }) };
    assert.ok(!decidable(confirming));
    assert.equal(undecidableWhy(confirming), "Being confirmed: the old copy on node1 is being deleted (resize_confirming).");
  });
  test("not before its record is finished", () => {
    const early = { ...waiting, resize: resize({ status: "post-migrating" }) };
    assert.ok(!decidable(early));
    assert.match(undecidableWhy(early), /record is post-migrating/);
  });
  test("not in any other status", () => {
    assert.ok(!decidable({ status: "ACTIVE", task_id: null, resize: null }));
    assert.equal(undecidableWhy({ status: "ACTIVE", task_id: null, resize: null }), "");
    assert.ok(!decidable({ ...waiting, status: "REVERT_RESIZE" }));
  });
});

describe("a resize under way", () => {
  test("RESIZE names the flavors and the task state", () => {
    assert.equal(
      resizeLine({ status: "RESIZE", task_state: "resize_migrating", resize: resize({ status: "migrating" }) }),
      "Resizing from small to large: resize_migrating",
    );
    assert.equal(resizeLine({ status: "RESIZE", task_state: "resize_prep", resize: null }), "Resizing: resize_prep");
  });
  test("REVERT_RESIZE says where it goes back to", () => {
    assert.equal(
      resizeLine({ status: "REVERT_RESIZE", task_state: "resize_reverting", resize: resize({ status: "reverting" }) }),
      "Reverting the resize to node1 at small: resize_reverting",
    );
    assert.equal(resizeLine({ status: "REVERT_RESIZE", task_state: null }), "Reverting the resize: no task state");
  });
  test("any other status: nothing", () => {
    assert.equal(resizeLine({ status: "ACTIVE", task_state: null }), "");
    assert.equal(resizeLine({ status: "VERIFY_RESIZE", task_state: null, resize: resize() }), "");
  });
  test("the resize statuses, and REVERT_RESIZE's tone", () => {
    assert.deepEqual([...RESIZE_STATUSES].sort(), ["RESIZE", "REVERT_RESIZE", "VERIFY_RESIZE"]);
    assert.equal(statusTone("REVERT_RESIZE"), "busy");
    assert.equal(statusTone("VERIFY_RESIZE"), "busy");
    assert.equal(statusTone("ACTIVE"), "good");
  });
});

describe("migration records", () => {
  test("a resize shows old → new flavor; a migration none", () => {
    assert.equal(flavorChange({ type: "resize", old_flavor: small, new_flavor: large }), "small → large");
    assert.equal(flavorChange({ type: "resize", old_flavor: null, new_flavor: large }), "custom → large");
    assert.equal(flavorChange({ type: "live-migration", old_flavor: null, new_flavor: null }), null);
  });
  test("the source hold, the route", () => {
    assert.equal(holdText({ node: "node1", vcpus: 1, memory_mb: 512 }), "node1: 1 vCPU, 512 MiB");
    assert.equal(holdText(null), null);
    assert.equal(routeText({ source: "node1", dest: null }), "node1 → –");
  });
  test("tones: ended well, waiting for the operator, reverted, failed, under way", () => {
    for (const s of ["completed", "confirmed"]) assert.equal(migrationTone(s), "good", s);
    assert.equal(migrationTone("finished"), "warn");
    assert.equal(migrationTone("reverted"), "warn");
    assert.equal(migrationTone("failed"), "bad");
    assert.equal(migrationTone("error"), "bad");
    for (const s of ["running", "pre-migrating", "migrating", "post-migrating", "confirming", "reverting"]) {
      assert.equal(migrationTone(s), "busy", s);
    }
  });
  test("open: still moving by itself (a finished resize waits for the operator)", () => {
    assert.ok(migrationOpen({ status: "migrating" }));
    assert.ok(migrationOpen({ status: "confirming" }));
    for (const s of ["finished", "completed", "confirmed", "reverted", "failed", "error"]) {
      assert.ok(!migrationOpen({ status: s }), s);
    }
  });
  test("the page's route carries the VM filter, and the filter is read back", () => {
    assert.equal(migrationsRoute(null), "#/migrations");
    assert.equal(migrationsRoute("web 1"), "#/migrations?vm=web%201");
    assert.equal(vmOfQuery("vm=web1"), "web1");
    assert.equal(vmOfQuery("vm=web%201"), "web 1");
    assert.equal(vmOfQuery(undefined), "");
    assert.equal(vmOfQuery("other=1"), "");
  });
});

describe("a node's allocations", () => {
  test("VMs and resize holds, added up", () => {
    const got = allocationSummary([
      { consumer: "vm", vm: "a", migration_id: null, vcpus: 2, memory_mb: 1024 },
      { consumer: "vm", vm: "b", migration_id: null, vcpus: 1, memory_mb: 512 },
      { consumer: "migration", vm: "c", migration_id: "m1", vcpus: 1, memory_mb: 512 },
    ]);
    assert.equal(got, "2 VMs and 1 resize hold: 4 vCPU, 2 GiB");
  });
  test("one VM, no hold; nothing", () => {
    assert.equal(allocationSummary([{ consumer: "vm", vm: "a", migration_id: null, vcpus: 1, memory_mb: 256 }]), "1 VM: 1 vCPU, 256 MiB");
    assert.equal(allocationSummary([]), "0 VMs: 0 vCPU, 0 MiB");
  });
});

describe("instance actions", () => {
  test("result tones", () => {
    assert.equal(resultTone("success"), "good");
    assert.equal(resultTone("error"), "bad");
    assert.equal(resultTone("running"), "busy");
    assert.equal(resultTone("pending"), "busy");
    assert.equal(resultTone("skipped"), "idle");
    assert.equal(resultTone("undone"), "warn");
    assert.equal(resultTone(null), "idle");
  });
  test("how long it took, or has taken so far", () => {
    const now = Date.parse("2025-01-01T00:01:00Z");
    assert.equal(tookText("2025-01-01T00:00:00Z", "2025-01-01T00:00:02.500Z", now), "2.5 s");
    assert.equal(tookText("2025-01-01T00:00:00Z", null, now), "1 min 0 s");
    assert.equal(tookText(null, null, now), "");
    assert.equal(tookText("garbage", null, now), "");
  });
  test("request ids: short in the table, safe as an element id", () => {
    assert.equal(shortRequest("req-0123456789abcdef"), "…456789abcdef");
    assert.equal(shortRequest("req-1"), "req-1");
    assert.equal(eventsRowId("req-a.b:c"), "action-events-req-a_b_c");
  });
});
