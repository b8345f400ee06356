// Unit tests of the reconcile page's storage helpers: `node --test web/test/`.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { checkedText, meaningOf } from "../../src/bollard/server/web/static/pages/reconcile.js";

describe("reconcile: the storage classes", () => {
  test("the meaning of volume-orphan, whose setting has a third policy", () => {
    const help =
      "What the state reconciler does by itself about files in a pool that no volume record owns (fix: delete the file): " +
      "report, partial (the default: fix only the unfinished targets of copies no task drives; report the other files), or fix.";
    assert.equal(meaningOf(help), "files in a pool that no volume record owns (fix: delete the file)");
  });
  test("the summary names the volumes checked and the hosts that did not answer", () => {
    const scan = { checked_vms: 3, checked_nodes: 2, checked_volumes: 5, silent_hosts: ["node2"] };
    assert.equal(checkedText(/** @type {any} */ (scan)), "checked 3 VMs on 2 nodes, 5 volumes (no storage answer from node2)");
    const old = { checked_vms: 3, checked_nodes: 2 };
    assert.equal(checkedText(/** @type {any} */ (old)), "checked 3 VMs on 2 nodes");
  });
});
