// Unit tests of the flavor helpers (static/pages/flavor_parts.js) and of the size part of the
// create-VM form (static/pages/vm_create_flavor.js): `node --test web/test/`.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  concernsFlavor,
  deleteFlavorText,
  flavorLabel,
  flavorOption,
  flavorRoute,
  flavorSize,
  parseProperties,
  propertiesLine,
  propertiesText,
  propertyChanges,
} from "../../src/bollard/server/web/static/pages/flavor_parts.js";
import { flavorOptions, sizeBody } from "../../src/bollard/server/web/static/pages/vm_create_flavor.js";

/** A flavor as GET /api/v1/flavors gives it. @param {Record<string, any>} over */
const flavor = (over = {}) => ({
  id: "019a0000-0000-7000-8000-000000000001",
  name: "small",
  vcpus: 2,
  memory_mb: 1024,
  disk_mb: 10240,
  description: null,
  properties: {},
  used_by: 0,
  created_at: "2025-01-01T00:00:00Z",
  updated_at: "2025-01-01T00:00:00Z",
  ...over,
});

describe("flavor labels and sizes", () => {
  test("a flavor's name; a size by hand (no flavor, or a ref without name) is custom", () => {
    assert.equal(flavorLabel({ id: "x", name: "small", vcpus: 1, memory_mb: 512, disk_mb: 0 }), "small");
    assert.equal(flavorLabel(null), "custom");
    assert.equal(flavorLabel(undefined), "custom");
    assert.equal(flavorLabel({ id: null, name: null, vcpus: 1, memory_mb: 512, disk_mb: 0 }), "custom");
  });
  test("the size in one line, with the root disk or none", () => {
    assert.equal(flavorSize(flavor()), "2 vCPU, 1 GiB, 10 GiB root disk");
    assert.equal(flavorSize(flavor({ disk_mb: 0, memory_mb: 512 })), "2 vCPU, 512 MiB, no root disk");
    assert.equal(flavorSize(null), "–");
  });
  test("an option of a select names the flavor and its size", () => {
    assert.equal(flavorOption(flavor()), "small (2 vCPU, 1 GiB, 10 GiB root disk)");
  });
  test("routes escape the name", () => {
    assert.equal(flavorRoute("m1.small"), "#/flavors/m1.small");
    assert.equal(flavorRoute("a b"), "#/flavors/a%20b");
  });
});

describe("properties", () => {
  test("on one line and as lines of the text area, by key", () => {
    const props = { tier: "gold", "hw:cpu_policy": "dedicated" };
    assert.equal(propertiesLine(props), "hw:cpu_policy=dedicated, tier=gold");
    assert.equal(propertiesText(props), "hw:cpu_policy=dedicated\ntier=gold");
    assert.equal(propertiesLine({}), "");
    assert.equal(propertiesText(null), "");
  });
  test("parse key=value lines: blank lines skipped, spaces trimmed, '=' allowed in the value", () => {
    assert.deepEqual(parseProperties("  tier = gold \n\nhw:cpu_policy=dedicated\r\nexpr=a=b\n"), {
      properties: { tier: "gold", "hw:cpu_policy": "dedicated", expr: "a=b" },
      errors: [],
    });
  });
  test("an empty value is a value", () => {
    assert.deepEqual(parseProperties("note="), { properties: { note: "" }, errors: [] });
  });
  test("every line that is not key=value is named by its number", () => {
    const got = parseProperties("tier=gold\njunk\n=x\ntier=silver");
    assert.deepEqual(got.properties, { tier: "gold" });
    assert.deepEqual(got.errors, [
      'line 2: "junk" is not key=value',
      `line 3: "=x" has no key before '='`,
      "line 4: the key tier is given twice",
    ]);
  });
  test("parsing what propertiesText wrote gives the properties back", () => {
    const props = { a: "1", "b.c": "x=y", d: "" };
    assert.deepEqual(parseProperties(propertiesText(props)).properties, props);
  });
  test("the PATCH body sets what was added or changed and unsets what was removed", () => {
    assert.deepEqual(propertyChanges({ a: "1", b: "2", c: "3" }, { a: "1", b: "20", d: "4" }), {
      properties: { b: "20", d: "4" },
      unset_properties: ["c"],
    });
  });
  test("nothing changed: an empty body", () => {
    assert.deepEqual(propertyChanges({ a: "1" }, { a: "1" }), {});
    assert.deepEqual(propertyChanges({}, {}), {});
  });
  test("only removals: no properties key", () => {
    assert.deepEqual(propertyChanges({ b: "2", a: "1" }, {}), { unset_properties: ["a", "b"] });
  });
});

describe("deleting a flavor", () => {
  test("says no VM changes size", () => {
    const text = deleteFlavorText("small", 0);
    assert.match(text, /^Delete flavor small\?/);
    assert.match(text, /no VM changes size/);
    assert.doesNotMatch(text, /refuses/);
  });
  test("in use: says the server refuses while any VM has it", () => {
    assert.match(deleteFlavorText("small", 1), /1 VM has it as current flavor: the server refuses/);
    assert.match(deleteFlavorText("small", 3), /3 VMs have it as current flavor/);
  });
});

describe("live events", () => {
  test("flavor events concern the list, and the page of the flavor they name", () => {
    const e = { kind: "flavor.updated", vm: null, data: { flavor: "small" } };
    assert.ok(concernsFlavor(e));
    assert.ok(concernsFlavor(e, "small"));
    assert.ok(!concernsFlavor(e, "large"));
  });
  test("a VM's event may change 'used by'; other events do not concern flavors", () => {
    assert.ok(concernsFlavor({ kind: "vm.created", vm: "web1", data: {} }, "small"));
    assert.ok(!concernsFlavor({ kind: "node.up", vm: null, data: {} }));
  });
});

describe("create form: the size", () => {
  test("a flavor is sent without vCPUs or memory (the API refuses both)", () => {
    assert.deepEqual(sizeBody("small", "", 2, 1024), { flavor: "small" });
    assert.deepEqual(sizeBody("small", "fast", 2, 1024), { flavor: "small", root_pool: "fast" });
  });
  test("no flavor: vCPUs and memory as typed (empty left for the API to refuse)", () => {
    assert.deepEqual(sizeBody("", "fast", 2, 512), { vcpus: 2, memory_mb: 512 });
    assert.deepEqual(sizeBody("", "", undefined, 512), { vcpus: undefined, memory_mb: 512 });
  });
  test("the select offers a size by hand first, then each flavor with its size", () => {
    assert.deepEqual(flavorOptions([flavor(), flavor({ name: "large", vcpus: 4, memory_mb: 4096, disk_mb: 0 })]), [
      ["", "none: vCPUs and memory typed below"],
      ["small", "small (2 vCPU, 1 GiB, 10 GiB root disk)"],
      ["large", "large (4 vCPU, 4 GiB, no root disk)"],
    ]);
  });
});
