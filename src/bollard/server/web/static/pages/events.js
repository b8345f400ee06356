// @ts-check
/** Events (`#/events`): the event log newest first, filtered by VM, node, task, actor (on
 * the server) and kind (contains), following live: new events matching the filters are
 * added on top as they arrive, unless paused ("Resume" adds what came meanwhile). "Older
 * events" pages back. */
import { h, replace } from "../js/dom.js";
import { debounce, messageOf, showError } from "../js/ui.js";
import { eventsTable, matches } from "./events_parts.js";
import { Loader, field } from "./ops_parts.js";

const PAGE = 100;
const MAX_LIMIT = 1000; // the API's largest page
const MAX_ROWS = 2000; // rows kept on the page; older ones are dropped (and can be paged back)

/** @typedef {import("./events_parts.js").Event} Event */
/** @typedef {import("./events_parts.js").EventFilters} EventFilters */

/**
 * @param {import("../js/ui.js").Ctx} ctx
 */
export async function render(ctx) {
  /** @param {string} name @param {string} placeholder */
  const input = (name, placeholder) =>
    /** @type {HTMLInputElement} */ (
      h("input", { type: "search", name, placeholder, autocomplete: "off", "data-testid": `events-${name}` })
    );
  const inputs = {
    vm: input("vm", "name or uuid"),
    node: input("node", "node name"),
    task: input("task", "task id"),
    actor: input("actor", "user, token or system"),
    kind: input("kind", "e.g. vm. or fenc"),
  };
  const pause = h("button", { type: "button", "aria-pressed": "false", "data-testid": "events-pause" }, "Pause");
  const status = h("span", { class: "muted", "data-testid": "events-status", "aria-live": "polite" });
  const results = h("div", { "data-testid": "events-results" });
  const older = h("button", { type: "button", "data-testid": "events-older", hidden: true }, "Older events");
  const olderNote = h("span", { class: "muted" });
  const form = h(
    "form",
    { class: "toolbar", role: "search", "aria-label": "Filter events" },
    field("VM", inputs.vm),
    field("Node", inputs.node),
    field("Task", inputs.task),
    field("Actor", inputs.actor),
    field("Kind", inputs.kind),
  );
  replace(
    ctx.view,
    h(
      "div",
      { class: "ops-page" },
      h("h1", null, "Events"),
      form,
      h("div", { class: "toolbar" }, pause, status),
      results,
      h("div", { class: "toolbar" }, older, olderNote),
    ),
  );

  /** @type {Event[]} newest first */
  let items = [];
  /** @type {Set<number>} */
  let ids = new Set();
  /** @type {Event[]} arrived while paused */
  let held = [];
  let paused = false;
  let loading = true;
  /** @type {Event[]} arrived while loading */
  let queued = [];
  let olderExist = false;
  /** @type {boolean | null} whether the server knows `before` (null: not known yet) */
  let serverPagesBack = null;
  const loader = new Loader(results);

  /** @returns {EventFilters} */
  const filters = () => ({
    vm: inputs.vm.value.trim(),
    node: inputs.node.value.trim(),
    task: inputs.task.value.trim(),
    actor: inputs.actor.value.trim(),
    kind: inputs.kind.value.trim(),
  });

  const draw = debounce(() => {
    if (!loader.alive) return;
    const f = filters();
    const any = Object.values(f).some(Boolean);
    // The kind filter is applied here too (a server without it sends every kind).
    const shown = f.kind ? items.filter((e) => matches(e, { ...f, vm: "", node: "", task: "", actor: "" })) : items;
    replace(results, eventsTable(shown, any ? "No event matches." : "No events yet."));
    status.textContent = paused
      ? `Paused: ${held.length} new ${held.length === 1 ? "event" : "events"} not shown`
      : `Following live: ${shown.length} ${shown.length === 1 ? "event" : "events"}`;
    status.className = paused ? "events-paused" : "muted";
    older.hidden = !olderExist;
  }, 100);

  /** @param {Event[]} found */
  function merge(found) {
    let added = false;
    for (const e of found) {
      if (ids.has(e.id)) continue;
      ids.add(e.id);
      items.push(e);
      added = true;
    }
    if (!added) return;
    items.sort((a, b) => b.id - a.id);
    if (items.length > MAX_ROWS) {
      for (const e of items.splice(MAX_ROWS)) ids.delete(e.id);
      olderExist = true;
    }
  }

  /** @param {Event} e */
  function arrived(e) {
    if (ids.has(e.id) || !matches(e, filters())) return;
    if (paused) {
      if (!held.some((x) => x.id === e.id)) held.push(e);
    } else {
      merge([e]);
    }
    draw();
  }

  /** Load from the newest (a filter changed). */
  async function load() {
    loading = true;
    queued = [];
    await loader.run(
      () => ctx.api.get("/events", { ...filters(), limit: PAGE }),
      (page) => {
        showError(null);
        items = [];
        ids = new Set();
        held = [];
        merge(page.items);
        olderExist = page.more;
        loading = false;
        for (const e of queued) arrived(e);
        queued = [];
        draw();
      },
      (err) => {
        showError(messageOf(err));
        items = [];
        ids = new Set();
        olderExist = false;
        loading = false;
        draw();
      },
    );
  }

  /** After a reconnect: whatever came since the newest shown (the feed replays it too). */
  const catchUp = debounce(() => {
    if (loading || items.length === 0) return;
    void loader.run(
      () => ctx.api.get("/events", { ...filters(), after: items[0].id, limit: MAX_LIMIT }),
      (page) => {
        for (const e of page.items) arrived(e);
      },
    );
  }, 300);

  older.addEventListener("click", async () => {
    if (items.length === 0) return;
    older.setAttribute("disabled", "");
    const oldest = items[items.length - 1].id;
    try {
      // A server that knows `before` answers only older ones; one that does not answers
      // the newest ones again: then ask for a bigger window instead.
      if (serverPagesBack !== false) {
        const page = await ctx.api.get("/events", { ...filters(), before: oldest, limit: PAGE });
        if (page.items.every((/** @type {Event} */ e) => e.id < oldest)) {
          serverPagesBack = true;
          merge(page.items);
          olderExist = page.more;
          draw();
          return;
        }
        serverPagesBack = false;
      }
      const limit = Math.min(MAX_LIMIT, items.length + PAGE);
      const page = await ctx.api.get("/events", { ...filters(), limit });
      merge(page.items);
      olderExist = page.more && limit < MAX_LIMIT;
      olderNote.textContent =
        page.more && limit >= MAX_LIMIT ? `The newest ${MAX_LIMIT} events are shown: narrow the filters to see older ones.` : "";
      draw();
    } catch (err) {
      showError(messageOf(err));
    } finally {
      older.removeAttribute("disabled");
    }
  });

  pause.addEventListener("click", () => {
    paused = !paused;
    pause.setAttribute("aria-pressed", String(paused));
    pause.textContent = paused ? "Resume" : "Pause";
    if (!paused) {
      merge(held.filter((e) => matches(e, filters())));
      held = [];
    }
    draw();
  });

  const refilter = debounce(() => void load(), 400);
  for (const el of Object.values(inputs)) el.addEventListener("input", refilter);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    void load();
  });

  ctx.onEvent((e) => {
    if (e.kind === "stream.connected") catchUp();
    else if (loading) queued.push(e);
    else arrived(e);
  });
  await load();
}
