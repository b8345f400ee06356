// Unit tests of the VM pages' pure helpers:
// `node --test web/test/`.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { deleteText, fieldErrors } from "../../src/bollard/server/web/static/pages/vm_common.js";
import { defaultPool, device, diskBody, numberOf, poolOptions } from "../../src/bollard/server/web/static/pages/vm_create_parts.js";
import { differs } from "../../src/bollard/server/web/static/pages/vm_parts.js";

describe("fieldErrors", () => {
  test("splits the API's validation line into its fields (a message the API gave)", () => {
    const message =
      "ha_priority: must be at most 1000 (not 5000); name: use letters, digits, '.', '_' and '-', " +
      "starting with a letter or digit; vcpus: must be at least 1 (not 0); disks[0].size_mb: must " +
      "be at least 1 (not 0); nics[0].bridge: must not be empty";
    assert.deepEqual(fieldErrors(message), [
      ["ha_priority", "must be at most 1000 (not 5000)"],
      ["name", "use letters, digits, '.', '_' and '-', starting with a letter or digit"],
      ["vcpus", "must be at least 1 (not 0)"],
      ["disks[0].size_mb", "must be at least 1 (not 0)"],
      ["nics[0].bridge", "must not be empty"],
    ]);
  });

  test("keeps colons inside a reason", () => {
    assert.deepEqual(fieldErrors("nics: MAC address 52:54:00:aa:bb:cc is given to more than one NIC"), [
      ["nics", "MAC address 52:54:00:aa:bb:cc is given to more than one NIC"],
    ]);
  });

  test("names no field for a line that is not one field's", () => {
    assert.deepEqual(fieldErrors("a VM named 'web1' already exists"), []);
    assert.deepEqual(fieldErrors("request body: is not valid JSON"), []);
    assert.deepEqual(fieldErrors("vcpus: must be at least 1; and then something else"), [
      ["vcpus", "must be at least 1; and then something else"],
    ]);
  });
});

describe("deleteText", () => {
  test("names the one VM", () => {
    const text = deleteText(["web1"]);
    assert.match(text, /^Delete VM web1\? It is powered off at once/);
    assert.match(text, /cannot be undone/);
  });

  test("lists every VM", () => {
    assert.match(deleteText(["a", "b", "c"]), /^Delete 3 VMs: a, b, c\? Each is powered off/);
  });
});

describe("differs", () => {
  test("a host that did not report does not differ", () => {
    assert.equal(differs(2, null), false);
    assert.equal(differs("running", undefined), false);
  });

  test("a paused VM is still meant to be running", () => {
    assert.equal(differs("running", "paused"), false);
    assert.equal(differs("stopped", "paused"), true);
  });

  test("other values differ when unequal", () => {
    assert.equal(differs(2, 2), false);
    assert.equal(differs(2, 4), true);
    assert.equal(differs("stopped", "running"), true);
  });
});

describe("create form parts", () => {
  test("numberOf: empty is left out, numbers are numbers", () => {
    assert.equal(numberOf(/** @type {any} */ ({ value: "  " })), undefined);
    assert.equal(numberOf(/** @type {any} */ ({ value: " 12 " })), 12);
    assert.equal(numberOf(/** @type {any} */ ({ value: "1.5" })), 1.5);
  });

  test("disk devices are vda, vdb, ...", () => {
    assert.deepEqual([0, 1, 15].map(device), ["vda", "vdb", "vdp"]);
  });
});

describe("create form: a disk's pool", () => {
  const pools = [
    { name: "nfs", type: "shared", free_mb: 2048 },
    { name: "fast", type: "local", free_mb: null },
    { name: "local", type: "local", free_mb: 512 },
  ];

  test("local first (the default), then by name, each with its type and free room", () => {
    assert.deepEqual(poolOptions(pools), [
      ["local", "local (local, 512 MiB free)"],
      ["fast", "fast (local)"],
      ["nfs", "nfs (shared, 2 GiB free)"],
    ]);
  });

  test("a new row starts in local, else in the first pool", () => {
    assert.equal(defaultPool(pools), "local");
    assert.equal(defaultPool(pools.filter((p) => p.name !== "local")), "fast");
    assert.equal(defaultPool([]), "local");
  });

  test("the body sends the size in MiB and the pool", () => {
    assert.deepEqual(diskBody(10, "GiB", "nfs"), { size_mb: 10240, pool: "nfs" });
    assert.deepEqual(diskBody(1.5, "GiB", "local"), { size_mb: 1536, pool: "local" });
    assert.deepEqual(diskBody(512, "MiB", "local"), { size_mb: 512, pool: "local" });
  });

  test("an empty size is left out, for the API to say it is needed", () => {
    assert.deepEqual(diskBody(undefined, "GiB", "nfs"), { pool: "nfs" });
  });
});
