// Unit tests of the storage pages' pure helpers (pools, volumes): `node --test web/test/`.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  VOLUME_STATES,
  attachable,
  busy,
  concernsPool,
  concernsVolume,
  deletePoolText,
  deleteSnapshotText,
  deleteVolumeText,
  detachText,
  fullness,
  nodesText,
  pathText,
  poolNodes,
  poolRoute,
  poolRow,
  revertText,
  sizeMb,
  volumeActions,
  volumeRoute,
  volumeRow,
  volumeTone,
} from "../../src/bollard/server/web/static/pages/storage_parts.js";
import { snapshotName } from "../../src/bollard/server/web/static/pages/volume_actions.js";

/** A pool as GET /api/v1/pools gives it. @param {Record<string, any>} over */
function pool(over = {}) {
  return {
    name: "fast",
    type: "shared",
    path: "/srv/fast",
    nodes: null,
    description: null,
    created_at: "2026-01-01T00:00:00Z",
    volumes: 2,
    provisioned_mb: 30 * 1024,
    capacity_mb: 100 * 1024,
    free_mb: 25 * 1024,
    hosts: [],
    ...over,
  };
}

/** A volume as GET /api/v1/volumes gives it. @param {Record<string, any>} over */
function volume(over = {}) {
  return {
    id: "0b7e",
    name: "data1",
    pool: "local",
    pool_type: "local",
    node: "node1",
    file: "vol-0b7e.qcow2",
    format: "qcow2",
    size_mb: 10240,
    state: "ready",
    vm: null,
    vm_uuid: null,
    device: null,
    task_id: null,
    delete_with_vm: false,
    fault: null,
    snapshots: 0,
    lock: null,
    created_at: "2026-01-01T00:00:00Z",
    updated_at: "2026-01-01T00:00:00Z",
    ...over,
  };
}

/** An event of the live stream. @param {Record<string, any>} over */
function event(over = {}) {
  return { id: 1, at: "2026-01-01T00:00:00Z", kind: "volume.state", vm: null, node: null, task_id: null, message: "", data: {}, actor: "admin", ...over };
}

describe("routes", () => {
  test("escape the name", () => {
    assert.equal(poolRoute("local"), "#/pools/local");
    assert.equal(volumeRoute("a b/c"), "#/volumes/a%20b%2Fc");
  });
});

describe("sizeMb", () => {
  test("a number in its unit as whole MiB", () => {
    assert.equal(sizeMb("10", "GiB"), 10240);
    assert.equal(sizeMb(" 1.5 ", "GiB"), 1536);
    assert.equal(sizeMb("512", "MiB"), 512);
    assert.equal(sizeMb("2", "TiB"), 2 * 1024 * 1024);
    assert.equal(sizeMb("0.3", "MiB"), 0); // the API says it is too small
  });
  test("empty or not a number is left for the API to refuse", () => {
    assert.equal(sizeMb("", "GiB"), undefined);
    assert.equal(sizeMb("  ", "GiB"), undefined);
    assert.equal(sizeMb("ten", "GiB"), undefined);
  });
});

describe("volume states", () => {
  test("ready: every action but detach", () => {
    assert.deepEqual(
      [...volumeActions(volume())].sort(),
      ["attach", "copy", "delete", "grow", "migrate", "revert", "snapshot", "snapshot-delete"],
    );
  });
  test("attached: detach, neither attach nor delete", () => {
    const can = volumeActions(volume({ state: "attached", vm: "web1", device: "vdb" }));
    assert.ok(can.has("detach") && can.has("grow") && can.has("snapshot") && can.has("migrate") && can.has("revert"));
    assert.ok(!can.has("attach") && !can.has("delete"));
  });
  test("error: only delete; a transition: nothing", () => {
    assert.deepEqual([...volumeActions(volume({ state: "error" }))], ["delete"]);
    for (const state of ["creating", "attaching", "resizing", "copying", "migrating", "snapshotting", "reverting", "deleting"]) {
      assert.equal(volumeActions(volume({ state })).size, 0, state);
    }
  });
  test("busy while a task drives it", () => {
    assert.equal(busy(volume({ state: "ready" })), false);
    assert.equal(busy(volume({ state: "attached" })), false);
    assert.equal(busy(volume({ state: "error" })), false);
    assert.equal(busy(volume({ state: "creating" })), true);
    assert.equal(busy(volume({ state: "migrating" })), true);
  });
  test("tones: at rest good, error bad, transitions busy", () => {
    assert.equal(volumeTone("ready"), "good");
    assert.equal(volumeTone("attached"), "good");
    assert.equal(volumeTone("error"), "bad");
    assert.equal(volumeTone("resizing"), "busy");
    assert.equal(volumeTone(null), "idle");
  });
  test("the filter lists every state once", () => {
    assert.equal(new Set(VOLUME_STATES).size, VOLUME_STATES.length);
    for (const state of ["creating", "ready", "attached", "error", "deleting"]) assert.ok(VOLUME_STATES.includes(state), state);
  });
});

describe("pools", () => {
  test("a pool's row", () => {
    assert.deepEqual(poolRow(pool()), {
      name: "fast",
      type: "shared",
      path: "/srv/fast",
      nodes: "every node",
      volumes: "2",
      provisioned: "30 GiB",
      capacity: { fraction: 0.75, text: "25 GiB free of 100 GiB" },
    });
  });
  test("a local pool without a path, on some nodes, not reported yet", () => {
    const row = poolRow(pool({ type: "local", path: null, nodes: ["node1", "node2"], capacity_mb: null, free_mb: null, volumes: 0, provisioned_mb: 0 }));
    assert.equal(row.path, "each host's default directory");
    assert.equal(row.nodes, "node1, node2");
    assert.equal(row.capacity, null);
    assert.equal(row.provisioned, "0 MiB");
  });
  test("texts of path and nodes", () => {
    assert.equal(pathText({ path: "/x" }), "/x");
    assert.equal(nodesText({ nodes: [] }), "no node");
    assert.equal(nodesText({ nodes: null }), "every node");
  });
  test("fullness: a full pool is all used; free above capacity is none used", () => {
    assert.deepEqual(fullness({ capacity_mb: 2048, free_mb: 0 }), { fraction: 1, text: "0 MiB free of 2 GiB" });
    assert.equal(fullness({ capacity_mb: 1024, free_mb: 2048 })?.fraction, 0);
    assert.equal(fullness({ capacity_mb: 1024, free_mb: null }), null);
  });
  test("the nodes a volume can be put on", () => {
    assert.deepEqual(poolNodes({ nodes: null }, ["n1", "n2"]), ["n1", "n2"]);
    assert.deepEqual(poolNodes({ nodes: ["n2"] }, ["n1", "n2"]), ["n2"]);
  });
});

describe("volumes", () => {
  test("a ready volume's row", () => {
    assert.deepEqual(volumeRow(volume()), {
      name: "data1",
      state: "ready",
      tone: "good",
      pool: "local",
      node: "node1",
      size: "10 GiB",
      format: "qcow2",
      attached: "–",
      snapshots: "0",
      task: "",
    });
  });
  test("an attached volume of a shared pool, with a task", () => {
    const row = volumeRow(volume({ pool: "fast", pool_type: "shared", node: null, state: "resizing", vm: "web1", device: "vdb", task_id: "t-1", snapshots: 3, size_mb: 1536 }));
    assert.equal(row.attached, "web1 (vdb)");
    assert.equal(row.node, "–");
    assert.equal(row.task, "t-1");
    assert.equal(row.tone, "busy");
    assert.equal(row.snapshots, "3");
    assert.equal(row.size, "1.5 GiB");
  });
  test("a local pool's volume is attachable to the VMs of its node only", () => {
    const vms = [
      { name: "a", node: "node1", status: "ACTIVE" },
      { name: "b", node: "node2", status: "ACTIVE" },
      { name: "c", node: null, status: "BUILD" },
      { name: "d", node: "node1", status: "DELETED" },
    ];
    assert.deepEqual(attachable(vms, volume()).map((v) => v.name), ["a"]);
    assert.deepEqual(attachable(vms, volume({ pool_type: "shared", node: null })).map((v) => v.name), ["a", "b", "c"]);
  });
  test("a snapshot's default name is the time, and a valid snapshot name", () => {
    const name = snapshotName(new Date(2026, 0, 5, 14, 2, 33));
    assert.equal(name, "snap-20260105-140233");
    assert.match(name, /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}$/);
  });
});

describe("live events", () => {
  test("a volume page follows its volume's events and its task's", () => {
    assert.equal(concernsVolume(event({ data: { volume: "data1" } }), "data1"), true);
    assert.equal(concernsVolume(event({ data: { volume: "data2" } }), "data1"), false);
    assert.equal(concernsVolume(event({ kind: "vm.state", vm: "web1", task_id: "t-1" }), "data1", "t-1"), true);
    assert.equal(concernsVolume(event({ kind: "vm.state", vm: "web1", task_id: "t-2" }), "data1", "t-1"), false);
    assert.equal(concernsVolume(event({ kind: "pool.created", data: { pool: "fast" } }), "data1"), false);
  });
  test("the volume list follows every volume event", () => {
    assert.equal(concernsVolume(event({ data: { volume: "any" } })), true);
    assert.equal(concernsVolume(event({ kind: "node.health" })), false);
  });
  test("a pool page follows its pool's events and its volumes'", () => {
    assert.equal(concernsPool(event({ kind: "pool.updated", data: { pool: "fast" } }), "fast"), true);
    assert.equal(concernsPool(event({ kind: "pool.updated", data: { pool: "slow" } }), "fast"), false);
    assert.equal(concernsPool(event({ kind: "volume.created", data: { pool: "fast", volume: "v" } }), "fast"), true);
    assert.equal(concernsPool(event({ kind: "volume.created", data: { pool: "slow", volume: "v" } }), "fast"), false);
    assert.equal(concernsPool(event({ kind: "vm.state", vm: "web1" }), "fast"), false);
    assert.equal(concernsPool(event({ kind: "pool.deleted", data: { pool: "x" } })), true);
  });
});

describe("confirmations say what is lost", () => {
  test("each names its object and what happens", () => {
    assert.match(deleteVolumeText("data1"), /^Delete volume data1\?.*destroyed.*cannot be undone/);
    assert.match(revertText("data1", "s1"), /data1.*s1.*since the snapshot.*lost/);
    assert.match(deleteSnapshotText("data1", "s1"), /snapshot s1 of data1/);
    assert.match(detachText("data1", "web1"), /Detach data1 from web1\?.*unmount/);
  });
  test("deleting a pool that holds volumes says the server refuses", () => {
    assert.doesNotMatch(deletePoolText("fast", 0), /refuses/);
    assert.match(deletePoolText("fast", 1), /holds 1 volume:/);
    assert.match(deletePoolText("fast", 3), /holds 3 volumes: the server refuses/);
  });
});
