// Unit tests of the overview's Servers card (static/pages/server_parts.js): each management
// server with its role, state and agents, the leader; and the overview page drawing it in a
// small fake DOM (web/fakes/browser.js) with a fake API, or leaving it out when the status
// says no `servers` (an older server, or an API server in front of cells).
// `node --test web/test/`.
import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, test } from "node:test";

// The fake browser first: it installs the globals the console's modules read when imported.
import { fakeCtx, resetShell } from "../fakes/browser.js";

const { h } = await import("../../src/bollard/server/web/static/js/dom.js");
const parts = await import("../../src/bollard/server/web/static/pages/server_parts.js");
const overview = await import("../../src/bollard/server/web/static/pages/overview.js");

/** A server (ServerOut). @param {Record<string, any>} over */
function server(over = {}) {
  return {
    id: "id-a",
    name: "a:8443",
    url: "https://10.0.0.5:8443",
    version: "0.23",
    state: "up",
    started_at: "2026-01-01T00:00:00Z",
    renewed_at: "2026-01-01T00:00:10Z",
    expires_at: "2026-01-01T00:00:40Z",
    stopped_at: null,
    role: "member",
    agents: 0,
    this: false,
    ...over,
  };
}

const LIST = {
  items: [
    server({ role: "leader", agents: 2, this: true }),
    server({ id: "id-b", name: "b:8443", agents: 1 }),
    server({ id: "id-c", name: "c:8443", state: "gone", role: "-", stopped_at: "2026-01-01T00:01:00Z" }),
  ],
  leader: "id-a",
};

const STATUS = {
  version: "0.23",
  database: "postgresql",
  nodes: { total: 0, connected: 0 },
  vms: { total: 0, by_status: {} },
  tasks_running: 0,
  maintenance: false,
  mode: "single",
};

beforeEach(() => {
  resetShell();
});

afterEach(() => {
  globalThis.window.location.hash = "#/";
});

describe("the overview's Servers card", () => {
  test("how many are up, the leader, and each server with its role and agents", () => {
    const box = h("div", null, parts.serversCard(LIST));
    assert.equal(box.querySelector("[data-field=servers-up]").textContent, "2 / 3");
    assert.equal(box.querySelector("[data-field=servers-leader]").textContent, "up; leader a:8443");
    const items = box.querySelectorAll("li");
    assert.deepEqual(
      items.map((li) => [li.dataset.server, li.dataset.role, li.dataset.state]),
      [
        ["a:8443", "leader", "up"],
        ["b:8443", "member", "up"],
        ["c:8443", "-", "gone"],
      ],
    );
    assert.equal(items[0].textContent, "a:8443 (this) leader 2 agents");
    assert.equal(items[1].textContent, "b:8443 member 1 agent");
    assert.equal(items[2].textContent, "c:8443 gone", "no agents said of a server that is not up");
    assert.deepEqual(
      items.map((li) => li.querySelector(".badge").getAttribute("class")),
      ["badge good", "badge idle", "badge bad"],
    );
    assert.equal(items[0].getAttribute("title"), "https://10.0.0.5:8443 (Bollard 0.23)");
  });

  test("no leader now; a leader without a listed row is named by its id", () => {
    const none = h("div", null, parts.serversCard({ items: LIST.items.slice(1), leader: null }));
    assert.equal(none.querySelector("[data-field=servers-leader]").textContent, "up; no leader now");
    const other = h("div", null, parts.serversCard({ items: LIST.items.slice(1), leader: "id-z" }));
    assert.equal(other.querySelector("[data-field=servers-leader]").textContent, "up; leader id-z");
  });

  test("an expired server is a warning; none registered yet says so", () => {
    assert.equal(parts.serverTone("expired"), "warn");
    assert.equal(parts.serverTone("stopped"), "idle");
    const empty = h("div", null, parts.serversCard({ items: [], leader: null }));
    assert.match(empty.textContent, /No server has registered yet/);
  });
});

describe("the overview page", () => {
  const answers = {
    "GET /nodes": { items: [], total: 0 },
    "GET /vms": { items: [], total: 0 },
    "GET /settings/fencing.enabled": { key: "fencing.enabled", value: true },
  };

  test("shows the Servers card when the status counts servers", async () => {
    globalThis.window.location.hash = "#/";
    const { ctx, calls } = fakeCtx({
      ...answers,
      "GET /status": { ...STATUS, servers: { total: 3, up: 2, leader: "a:8443" } },
      "GET /servers": LIST,
    });
    await overview.render(ctx);
    const card = ctx.view.querySelector("[data-testid=card-servers]");
    assert.ok(card && !card.hidden, "the Servers card is shown");
    assert.equal(card.querySelector("[data-field=servers-up]").textContent, "2 / 3");
    assert.equal(card.querySelectorAll("li").length, 3);
    assert.ok(calls.some((c) => c.path === "/servers"));
  });

  test("leaves the card out, without asking, when the status has no servers", async () => {
    globalThis.window.location.hash = "#/";
    const { ctx, calls } = fakeCtx({ ...answers, "GET /status": STATUS });
    await overview.render(ctx);
    assert.equal(ctx.view.querySelector("[data-testid=card-servers]").hidden, true);
    assert.ok(!calls.some((c) => c.path === "/servers"), "GET /servers is not asked");
  });
});
