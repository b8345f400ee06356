// Unit tests of the DOM-free helpers of static/js/ui.js: messageOf and debounce.
import assert from "node:assert/strict";
import { describe, mock, test } from "node:test";

import { debounce, messageOf } from "../../src/bollard/server/web/static/js/ui.js";

describe("messageOf", () => {
  test("an Error's message on one line", () => {
    assert.equal(messageOf(new Error("no node\n  can take   web1 ")), "no node can take web1");
  });
  test("anything else as text", () => {
    assert.equal(messageOf("plain"), "plain");
    assert.equal(messageOf(42), "42");
  });
});

describe("debounce", () => {
  test("a burst of calls runs the function once, after the delay", (t) => {
    t.mock.timers.enable({ apis: ["setTimeout"] });
    const fn = mock.fn();
    const refresh = debounce(fn, 250);
    refresh();
    refresh();
    refresh();
    t.mock.timers.tick(249);
    assert.equal(fn.mock.callCount(), 0);
    t.mock.timers.tick(1);
    assert.equal(fn.mock.callCount(), 1);
  });
  test("a call after the run schedules another", (t) => {
    t.mock.timers.enable({ apis: ["setTimeout"] });
    const fn = mock.fn();
    const refresh = debounce(fn, 100);
    refresh();
    t.mock.timers.tick(100);
    refresh();
    t.mock.timers.tick(100);
    assert.equal(fn.mock.callCount(), 2);
  });
});
