// Unit tests of the node pages' pure helpers: `node --test web/test/`.
import assert from "node:assert/strict";
import { test } from "node:test";

import { matches } from "../../src/bollard/server/web/static/pages/nodes.js";
import { loadText, powerText, provisionedMemory } from "../../src/bollard/server/web/static/pages/nodes_table.js";

const node = (over = {}) => ({
  name: "node1",
  health: "up",
  scheduling: "ready",
  connected: true,
  driver: "sim",
  power: { driver: "ipmi", address: "10.0.0.5", credentials: true },
  ...over,
});

test("provisioned memory sums every placed VM per node, running or not", () => {
  const got = provisionedMemory([
    { name: "a", node: "n1", status: "ACTIVE", memory_mb: 1024 },
    { name: "b", node: "n1", status: "SHUTOFF", memory_mb: 512 },
    { name: "c", node: "n2", status: "ERROR", memory_mb: 256 },
    { name: "d", node: null, status: "BUILD", memory_mb: 4096 },
  ]);
  assert.deepEqual([...got.entries()].sort(), [["n1", 1536], ["n2", 256]]);
});

test("no VMs: nothing provisioned", () => {
  assert.equal(provisionedMemory([]).size, 0);
});

test("the filter matches every word against name, health, scheduling and drivers", () => {
  assert.ok(matches(node(), ""));
  assert.ok(matches(node(), "NODE1"));
  assert.ok(matches(node(), "up ipmi"));
  assert.ok(matches(node({ health: "dead", connected: false }), "dead disconnected"));
  assert.ok(!matches(node(), "node1 dead"));
  assert.ok(!matches(node(), "node2"));
});

test("load and power driver texts", () => {
  assert.equal(loadText(null), "–");
  assert.equal(loadText(0.125), "0.13");
  assert.equal(loadText(2), "2");
  assert.equal(powerText({ driver: null, address: null, credentials: false }), "none");
  assert.equal(powerText({ driver: "redfish", address: "https://bmc", credentials: true }), "redfish at https://bmc");
  assert.equal(powerText({ driver: "sim", address: null, credentials: false }), "sim");
});
