// Unit tests of the console's pure formatting helpers (static/js/format.js): `node --test web/test/`.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  FINISHED_TASK_STATES,
  SseParser,
  ago,
  diskSize,
  duration,
  errorLine,
  memory,
  outcomeLine,
  percent,
  progressLine,
  ratio,
  taskFinished,
  tone,
  trim,
  when,
} from "../../src/bollard/server/web/static/js/format.js";

describe("trim", () => {
  test("integers stay as they are", () => {
    assert.equal(trim(2), "2");
    assert.equal(trim(100), "100");
  });
  test("at most two decimals, no trailing zeros", () => {
    assert.equal(trim(2.5), "2.5");
    assert.equal(trim(10.1), "10.1");
    assert.equal(trim(2.9296875), "2.93");
    assert.equal(trim(100.001), "100");
    assert.equal(trim(20.001), "20");
  });
});

describe("memory (MiB)", () => {
  test("MiB below a GiB", () => {
    assert.equal(memory(512), "512 MiB");
    assert.equal(memory(1000), "1000 MiB");
  });
  test("GiB from 1024 MiB", () => {
    assert.equal(memory(1024), "1 GiB");
    assert.equal(memory(1536), "1.5 GiB");
    assert.equal(memory(3000), "2.93 GiB");
  });
  test("TiB from 1024 GiB", () => {
    assert.equal(memory(1024 * 1024), "1 TiB");
    assert.equal(memory(1.5 * 1024 * 1024), "1.5 TiB");
  });
  test("unknown is a dash", () => {
    assert.equal(memory(null), "–");
    assert.equal(memory(undefined), "–");
  });
  test("zero is zero", () => {
    assert.equal(memory(0), "0 MiB");
  });
});

describe("diskSize (GiB)", () => {
  test("GiB, then TiB", () => {
    assert.equal(diskSize(20), "20 GiB");
    assert.equal(diskSize(1023), "1023 GiB");
    assert.equal(diskSize(1536), "1.5 TiB");
  });
  test("unknown is a dash", () => {
    assert.equal(diskSize(null), "–");
  });
});

describe("percent", () => {
  test("a fraction as a whole percentage", () => {
    assert.equal(percent(0.42), "42%");
    assert.equal(percent(0), "0%");
    assert.equal(percent(1), "100%");
    assert.equal(percent(0.999), "100%");
  });
  test("clamped to 0..100", () => {
    assert.equal(percent(1.5), "100%");
    assert.equal(percent(-0.2), "0%");
  });
  test("unknown is a dash", () => {
    assert.equal(percent(null), "–");
    assert.equal(percent(undefined), "–");
    assert.equal(percent(Number.NaN), "–");
  });
});

describe("ratio", () => {
  test("used / total", () => {
    assert.equal(ratio(3, 12), 0.25);
  });
  test("clamped to 0..1", () => {
    assert.equal(ratio(20, 10), 1);
    assert.equal(ratio(-1, 10), 0);
  });
  test("0 when the total is 0 or unknown, or used is unknown", () => {
    assert.equal(ratio(5, 0), 0);
    assert.equal(ratio(5, null), 0);
    assert.equal(ratio(null, 10), 0);
  });
});

describe("duration (seconds)", () => {
  test("milliseconds under a second", () => {
    assert.equal(duration(0.85), "850 ms");
    assert.equal(duration(0), "0 ms");
  });
  test("seconds, to a tenth, under a minute", () => {
    assert.equal(duration(12.46), "12.5 s");
    assert.equal(duration(5), "5 s");
  });
  test("minutes and seconds under an hour", () => {
    assert.equal(duration(185), "3 min 5 s");
    assert.equal(duration(60), "1 min 0 s");
  });
  test("hours and minutes", () => {
    assert.equal(duration(7440), "2 h 4 min");
    assert.equal(duration(3600), "1 h 0 min");
  });
  test("unknown is a dash", () => {
    assert.equal(duration(null), "–");
    assert.equal(duration(Number.NaN), "–");
  });
});

describe("ago", () => {
  const now = Date.parse("2024-01-01T00:01:00Z");
  test("past and future", () => {
    assert.equal(ago("2024-01-01T00:00:57Z", now), "3 s ago");
    assert.equal(ago("2024-01-01T00:01:05Z", now), "in 5 s");
    assert.equal(ago("2023-12-31T23:58:55Z", now), "2 min 5 s ago");
  });
  test("under a second is now", () => {
    assert.equal(ago("2024-01-01T00:00:59.600Z", now), "now");
  });
  test("never, and text that is no time as it is", () => {
    assert.equal(ago(null, now), "never");
    assert.equal(ago("", now), "never");
    assert.equal(ago("soon", now), "soon");
  });
});

describe("when", () => {
  test("local YYYY-MM-DD HH:MM:SS", () => {
    const local = new Date(2024, 0, 2, 3, 4, 5); // in this process's time zone
    assert.equal(when(local.toISOString()), "2024-01-02 03:04:05");
  });
  test("unknown is a dash; text that is no time stays", () => {
    assert.equal(when(null), "–");
    assert.equal(when("not a time"), "not a time");
  });
});

describe("tone", () => {
  test("states by meaning", () => {
    assert.equal(tone("ACTIVE"), "good");
    assert.equal(tone("up"), "good");
    assert.equal(tone("succeeded"), "good");
    assert.equal(tone("MIGRATING"), "busy");
    assert.equal(tone("running"), "busy");
    assert.equal(tone("suspect"), "warn");
    assert.equal(tone("fenced"), "bad");
    assert.equal(tone("ERROR"), "bad");
    assert.equal(tone("needs_attention"), "bad");
  });
  test("anything unknown is idle", () => {
    assert.equal(tone("no-such-state"), "idle");
    assert.equal(tone(null), "idle");
    assert.equal(tone(undefined), "idle");
  });
});

describe("taskFinished", () => {
  test("terminal states", () => {
    for (const state of ["succeeded", "failed", "rolled_back", "needs_attention"]) {
      assert.equal(taskFinished({ state }), true, state);
      assert.ok(FINISHED_TASK_STATES.has(state));
    }
  });
  test("states that still move", () => {
    for (const state of ["pending", "running", "rolling_back"]) {
      assert.equal(taskFinished({ state }), false, state);
    }
  });
});

describe("progressLine", () => {
  test("a migration's phase and percentage from its result, the percentage once", () => {
    const task = {
      state: "running",
      result: { progress: { step: "live_migrate", fraction: 0.42, message: "migrate transfer: 42%" } },
    };
    assert.equal(progressLine(task), "live_migrate: migrate transfer: 42%");
  });
  test("the fraction as a percentage when the message has none", () => {
    const task = { state: "running", result: { progress: { step: "copy", fraction: 0.5, message: "copying vda" } } };
    assert.equal(progressLine(task), "copy: copying vda: 50%");
  });
  test("without a fraction: step and message", () => {
    const task = { state: "running", result: { progress: { step: "copy", message: "starting" } } };
    assert.equal(progressLine(task), "copy: starting");
  });
  test("else the running (or waiting) step", () => {
    const steps = [
      { name: "reserve", state: "done" },
      { name: "spawn", state: "running" },
      { name: "start", state: "pending" },
    ];
    assert.equal(progressLine({ state: "running", steps }), "spawn: running");
    const waiting = [{ name: "fence", state: "waiting" }];
    assert.equal(progressLine({ state: "running", steps: waiting }), "fence: waiting");
  });
  test("nothing to say is empty", () => {
    assert.equal(progressLine({ state: "pending" }), "");
    assert.equal(progressLine({ state: "running", result: {}, steps: null }), "");
  });
});

describe("outcomeLine", () => {
  test("the error first", () => {
    const task = { state: "failed", error: "no node can take it", result: { summary: "x" } };
    assert.equal(outcomeLine(task), "no node can take it");
  });
  test("then the summary", () => {
    const task = { state: "succeeded", error: null, result: { summary: "migrated live to node2" } };
    assert.equal(outcomeLine(task), "migrated live to node2");
  });
  test("else the state, readable", () => {
    assert.equal(outcomeLine({ state: "rolled_back", result: {} }), "rolled back");
    assert.equal(outcomeLine({ state: "needs_attention" }), "needs attention");
  });
});

describe("errorLine", () => {
  test("the API's error message, on one line", () => {
    const body = { error: { code: "not_found", message: "no VM named\n  web1" } };
    assert.equal(errorLine(404, body), "no VM named web1");
  });
  test("FastAPI's detail when it is text", () => {
    assert.equal(errorLine(401, { detail: "invalid token" }), "invalid token");
  });
  test("the status when the body says nothing", () => {
    assert.equal(errorLine(502, null), "the server answered 502");
    assert.equal(errorLine(500, { error: { message: "" } }), "the server answered 500");
    assert.equal(errorLine(422, { detail: [{ loc: ["body"], msg: "x" }] }), "the server answered 422");
  });
});

describe("SseParser", () => {
  test("one message per blank-line-terminated block, with id and event", () => {
    const parser = new SseParser();
    const got = parser.feed('id: 7\nevent: event\ndata: {"kind":"vm.started"}\n\n');
    assert.deepEqual(got, [{ id: "7", event: "event", data: '{"kind":"vm.started"}' }]);
  });
  test("messages split across chunks come out whole, once", () => {
    const parser = new SseParser();
    assert.deepEqual(parser.feed("id: 1\ndata: {\"a\""), []);
    assert.deepEqual(parser.feed(":1}\n"), []);
    assert.deepEqual(parser.feed("\nid: 2\ndata: x\n\n"), [
      { id: "1", event: "message", data: '{"a":1}' },
      { id: "2", event: "message", data: "x" },
    ]);
    assert.deepEqual(parser.feed(""), []);
  });
  test("CRLF and CR line ends", () => {
    const parser = new SseParser();
    assert.deepEqual(parser.feed("data: a\r\n\r\ndata: b\r\r"), [
      { id: null, event: "message", data: "a" },
      { id: null, event: "message", data: "b" },
    ]);
  });
  test("comments, retry and blocks without data give no message", () => {
    const parser = new SseParser();
    assert.deepEqual(parser.feed("retry: 2000\n: from 0\n\n: keepalive\n\n"), []);
  });
  test("several data lines join with newlines; one leading space is dropped", () => {
    const parser = new SseParser();
    assert.deepEqual(parser.feed("data: one\ndata:two\ndata:  three\n\n"), [
      { id: null, event: "message", data: "one\ntwo\n three" },
    ]);
  });
});
