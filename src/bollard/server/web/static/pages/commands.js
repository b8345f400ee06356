// @ts-check
/** Commands (`#/commands`): every command the server sent to an agent, newest first, with
 * the server's state and the agent's journal state side by side, the answer, attempts and
 * the task it belongs to. Filters: node, state (or "not finished"), VM. Live: reloaded on
 * events about nodes or tasks, and every 2 s while one shown is not finished. */
import { h, replace } from "../js/dom.js";
import { debounce, messageOf, showError } from "../js/ui.js";
import { OPEN, STATES, TERMINAL, VmNames, commandsTable } from "./commands_parts.js";
import { Loader, field } from "./ops_parts.js";

const PAGE = 100;
const MAX_PAGE = 1000;
const MAX_ALL = 5000;

/** @typedef {import("./commands_parts.js").Command} Command */

/**
 * @param {import("../js/ui.js").Ctx} ctx
 */
export async function render(ctx) {
  const node = /** @type {HTMLSelectElement} */ (
    h("select", { name: "node", "data-testid": "commands-node" }, h("option", { value: "" }, "any node"))
  );
  const state = /** @type {HTMLSelectElement} */ (
    h(
      "select",
      { name: "state", "data-testid": "commands-state" },
      h("option", { value: "" }, "any state"),
      h("option", { value: "open" }, "not finished"),
      STATES.map((s) => h("option", { value: s }, s)),
    )
  );
  const vm = /** @type {HTMLInputElement} */ (
    h("input", { type: "search", name: "vm", placeholder: "VM name or uuid", autocomplete: "off", "data-testid": "commands-vm" })
  );
  const summary = h("span", { class: "muted", "data-testid": "commands-summary", "aria-live": "polite" });
  const results = h("div", { "data-testid": "commands-results" });
  const more = h("button", { type: "button", "data-testid": "commands-more", hidden: true }, "Show more");
  const form = h(
    "form",
    { class: "toolbar", role: "search", "aria-label": "Filter commands" },
    field("Node", node),
    field("State", state),
    field("VM", vm),
    summary,
  );
  replace(ctx.view, h("div", { class: "ops-page" }, h("h1", null, "Commands"), form, results, h("div", { class: "toolbar" }, more)));

  const names = new VmNames(ctx.api);
  const loader = new Loader(results);
  /** @type {Command[]} */
  let shown = [];
  /** @type {Command[] | null} every command, newest first, when the server cannot list newest first */
  let everything = null;
  /** @type {string | null} */
  let cursor = null;
  let total = 0;
  let want = PAGE;

  const query = () => ({
    order: "newest",
    node: node.value || null,
    vm: vm.value.trim() || null,
    state: state.value === "open" ? OPEN.join(",") : state.value || null,
  });
  const filtered = () => Boolean(node.value || state.value || vm.value.trim());

  function draw() {
    replace(results, commandsTable(shown, (u) => names.get(u), filtered() ? "No command matches." : "No command yet."));
    summary.textContent = `${shown.length} of ${total}`;
    more.hidden = everything ? shown.length >= everything.length : cursor === null;
  }

  /** @param {Command[]} items */
  const newestFirst = (items) => items.slice().sort((a, b) => (a.id < b.id ? 1 : a.id > b.id ? -1 : 0));

  async function fetchShown() {
    const q = query();
    const page = await ctx.api.get("/commands", { ...q, limit: Math.min(want, MAX_PAGE) });
    const ascending = page.items.length > 1 && page.items[0].id < page.items[1].id;
    if (page.next_cursor && ascending) {
      // This server lists oldest first only: take them all and turn them round.
      const all = newestFirst(await ctx.api.all("/commands", q, MAX_ALL));
      return { items: all.slice(0, want), all, cursor: null, total: page.total };
    }
    return { items: newestFirst(page.items), all: null, cursor: page.next_cursor, total: page.total };
  }

  async function reload() {
    await loader.run(
      async () => {
        const found = await fetchShown();
        await names.learn(found.items.map((c) => c.vm_uuid));
        return found;
      },
      (found) => {
        showError(null);
        shown = found.items;
        everything = found.all;
        cursor = found.cursor;
        total = found.total;
        draw();
      },
      (err) => {
        showError(messageOf(err));
        shown = [];
        everything = null;
        cursor = null;
        total = 0;
        draw();
      },
    );
  }

  more.addEventListener("click", async () => {
    want += PAGE;
    if (everything) {
      shown = everything.slice(0, want);
      draw();
      return;
    }
    if (!cursor) return;
    more.setAttribute("disabled", "");
    try {
      await loader.run(
        async () => {
          const page = await ctx.api.get("/commands", { ...query(), limit: PAGE, cursor });
          await names.learn(page.items.map((/** @type {Command} */ c) => c.vm_uuid));
          return page;
        },
        (page) => {
          const seen = new Set(shown.map((c) => c.id));
          shown = shown.concat(page.items.filter((/** @type {Command} */ c) => !seen.has(c.id)));
          cursor = page.next_cursor;
          total = page.total;
          draw();
        },
      );
    } finally {
      more.removeAttribute("disabled");
    }
  });

  const refresh = debounce(() => void reload(), 500);
  const refilter = () => {
    want = PAGE;
    void reload();
  };
  node.addEventListener("change", refilter);
  state.addEventListener("change", refilter);
  vm.addEventListener("input", debounce(refilter, 400));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    refilter();
  });

  ctx.onEvent((e) => {
    if (e.node || e.task_id || e.kind === "stream.connected") refresh();
  });
  // Commands move on without events of their own (sent, answered, reconciled).
  ctx.every(() => {
    if (shown.some((c) => !TERMINAL.has(c.state))) refresh();
  }, 2000);

  try {
    const nodes = await ctx.api.all("/nodes");
    for (const n of nodes) node.append(h("option", { value: n.name }, n.name));
  } catch (err) {
    showError(messageOf(err));
  }
  await reload();
}
