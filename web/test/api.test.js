// Unit tests of the console's REST client (static/js/api.js) with a stub fetch: every call
// carries the token, failures become one-line ApiErrors, 401 signs out, lists page on.
import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, test } from "node:test";

import { API, Api, ApiError, pathOf } from "../../src/bollard/server/web/static/js/api.js";

const ORIGIN = "https://bollard.test:8700";

/** @type {{url: URL, init: RequestInit}[]} */
let calls;
/** @type {((url: URL, init: RequestInit) => Response | Promise<Response>) | null} */
let answer;

function json(status, body) {
  return new Response(body === undefined ? "" : JSON.stringify(body), {
    status,
    headers: { "Content-Type": "application/json" },
  });
}

beforeEach(() => {
  calls = [];
  answer = null;
  globalThis.window = /** @type {any} */ ({ location: { origin: ORIGIN, host: "bollard.test:8700" } });
  globalThis.fetch = async (url, init) => {
    calls.push({ url: new URL(String(url)), init });
    assert.ok(answer, "no answer set for this call");
    return answer(new URL(String(url)), init);
  };
});

afterEach(() => {
  delete globalThis.window;
  delete globalThis.fetch;
});

describe("pathOf", () => {
  test("escapes the name", () => {
    assert.equal(pathOf("vms", "web1"), "/vms/web1");
    assert.equal(pathOf("vms", "a/b c?"), "/vms/a%2Fb%20c%3F");
  });
});

describe("Api.call", () => {
  test("GET under /api/v1 with the bearer token and the query, empty values left out", async () => {
    answer = () => json(200, { ok: true });
    const api = new Api("s3cret");
    assert.deepEqual(await api.get("/vms", { status: "ACTIVE", node: "", name: null, limit: 5 }), {
      ok: true,
    });
    assert.equal(calls.length, 1);
    const { url, init } = calls[0];
    assert.equal(url.origin, ORIGIN);
    assert.equal(url.pathname, `${API}/vms`);
    assert.deepEqual(Object.fromEntries(url.searchParams), { status: "ACTIVE", limit: "5" });
    assert.equal(init.method, "GET");
    assert.equal(/** @type {any} */ (init.headers).Authorization, "Bearer s3cret");
    assert.equal(init.body, undefined);
  });

  test("a body is sent as JSON", async () => {
    answer = () => json(202, { task: "t1" });
    await new Api("t").post("/vms/web1/migrate", { to: "node2" });
    const { init } = calls[0];
    assert.equal(init.method, "POST");
    assert.equal(/** @type {any} */ (init.headers)["Content-Type"], "application/json");
    assert.deepEqual(JSON.parse(String(init.body)), { to: "node2" });
  });

  test("an error answer is an ApiError with the server's message on one line", async () => {
    answer = () => json(409, { error: { code: "conflict", message: "web1 is\nmigrating" } });
    await assert.rejects(new Api("t").post("/vms/web1/stop"), (err) => {
      assert.ok(err instanceof ApiError);
      assert.equal(err.status, 409);
      assert.equal(err.code, "conflict");
      assert.equal(err.message, "web1 is migrating");
      return true;
    });
  });

  test("a body that is no JSON still gives a readable error", async () => {
    answer = () => new Response("<html>bad gateway</html>", { status: 502 });
    await assert.rejects(new Api("t").get("/status"), { status: 502, message: "the server answered 502" });
  });

  test("401 calls onUnauthorized (the console signs out)", async () => {
    answer = () => json(401, { error: { code: "unauthorized", message: "invalid token" } });
    const api = new Api("old");
    let signedOut = 0;
    api.onUnauthorized = () => signedOut++;
    await assert.rejects(api.get("/vms"), { status: 401 });
    assert.equal(signedOut, 1);
  });

  test("403 does not sign out", async () => {
    answer = () => json(403, { error: { code: "forbidden", message: "role reader may not" } });
    const api = new Api("reader");
    let signedOut = 0;
    api.onUnauthorized = () => signedOut++;
    await assert.rejects(api.post("/vms/web1/stop"), { status: 403, message: "role reader may not" });
    assert.equal(signedOut, 0);
  });

  test("an unreachable server is one line naming it", async () => {
    globalThis.fetch = async () => {
      throw new TypeError("Failed to fetch");
    };
    await assert.rejects(new Api("t").get("/status"), {
      status: 0,
      message: "the server at bollard.test:8700 does not answer",
    });
  });

  test("an empty answer is null", async () => {
    answer = () => new Response(null, { status: 204 });
    assert.equal(await new Api("t").del("/vms/web1"), null);
  });
});

describe("Api.all", () => {
  test("follows next_cursor until the last page", async () => {
    const pages = {
      "": { items: [1, 2], next_cursor: "c1" },
      c1: { items: [3], next_cursor: "c2" },
      c2: { items: [4], next_cursor: null },
    };
    answer = (url) => json(200, pages[url.searchParams.get("cursor") ?? ""]);
    assert.deepEqual(await new Api("t").all("/nodes", { health: "up" }), [1, 2, 3, 4]);
    assert.equal(calls.length, 3);
    for (const { url } of calls) assert.equal(url.searchParams.get("health"), "up");
  });

  test("stops once it has max items", async () => {
    answer = () => json(200, { items: [1, 2, 3], next_cursor: "more" });
    assert.deepEqual(await new Api("t").all("/events", {}, 5), [1, 2, 3, 1, 2, 3]);
    assert.equal(calls.length, 2);
  });
});
