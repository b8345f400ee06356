// @ts-check
/** Tasks (`#/tasks`): every operation, newest first, with its state, what it is about (a VM,
 * else the volume of a volume task; and its node), who asked and its progress or outcome.
 * Filters: not ended only, one VM. Pages of 100 ("Show more"); live: reloaded on every event
 * naming a task, and every second while one runs. */
import { h, replace, table } from "../js/dom.js";
import { duration, outcomeLine, progressLine, taskFinished, tone } from "../js/format.js";
import { subjectLink, taskSubject } from "../js/taskpanel.js";
import { badge, debounce, messageOf, showError } from "../js/ui.js";
import { Loader, field, nodeLink, taskLink, time, vmLink } from "./ops_parts.js";

const PAGE = 100;
const MAX_PAGE = 1000;

/** @typedef {{id: string, type: string, vm: string | null, node: string | null, state: string, actor: string | null, error: string | null, params: Record<string, any>, result: Record<string, any>, created_at: string, finished_at: string | null}} Task */

/**
 * @param {import("../js/ui.js").Ctx} ctx
 */
export async function render(ctx) {
  const active = /** @type {HTMLInputElement} */ (h("input", { type: "checkbox", name: "active", "data-testid": "tasks-active" }));
  const vm = /** @type {HTMLInputElement} */ (
    h("input", { type: "search", name: "vm", placeholder: "VM name or uuid", autocomplete: "off", "data-testid": "tasks-vm" })
  );
  const summary = h("span", { class: "muted", "data-testid": "tasks-summary", "aria-live": "polite" });
  const results = h("div", { "data-testid": "tasks-results" });
  const more = h("button", { type: "button", "data-testid": "tasks-more", hidden: true }, "Show more");
  const filters = h(
    "form",
    { class: "toolbar", role: "search", "aria-label": "Filter tasks" },
    h("label", { class: "check" }, active, " Not ended only"),
    field("VM", vm),
    summary,
  );
  replace(ctx.view, h("div", { class: "ops-page" }, h("h1", null, "Tasks"), filters, results, h("div", { class: "toolbar" }, more)));

  /** @type {Task[]} */
  let shown = [];
  /** @type {string | null} */
  let cursor = null;
  let total = 0;
  const loader = new Loader(results);

  const query = () => ({ order: "newest", active: active.checked ? true : null, vm: vm.value.trim() || null });

  function draw() {
    const now = Date.now();
    replace(
      results,
      table(
        [
          { title: "State", field: "state", cell: (t) => badge(t.state, tone(t.state)) },
          { title: "Type", field: "type", cell: (t) => taskLink(t.id, t.type) },
          { title: "VM / volume", field: "subject", cell: (t) => subjectCell(t) },
          { title: "Node", field: "node", cell: (t) => nodeLink(t.node) },
          { title: "Actor", field: "actor", cell: (t) => t.actor ?? "" },
          { title: "Created", field: "created", cell: (t) => time(t.created_at) },
          { title: "Took", field: "took", cell: (t) => took(t, now) },
          {
            title: "Progress / outcome",
            field: "outcome",
            cell: (t) =>
              taskFinished(t)
                ? h("span", { class: t.error ? "bad-text" : null }, outcomeLine(t))
                : h("span", { dataset: { field: "progress" } }, progressLine(t) || t.state.replace(/_/g, " ")),
          },
        ],
        shown,
        (t) => ({ dataset: { testid: "task-row", task: t.id, state: t.state } }),
        query().vm || query().active ? "No task matches." : "No task yet.",
      ),
    );
    summary.textContent = `${shown.length} of ${total}`;
    more.hidden = cursor === null;
  }

  /** Reload from the newest, as many as are shown (live refresh keeps "Show more"). */
  async function reload() {
    const limit = Math.min(Math.max(PAGE, shown.length), MAX_PAGE);
    await loader.run(
      () => ctx.api.get("/tasks", { ...query(), limit }),
      (page) => {
        showError(null);
        shown = page.items;
        cursor = page.next_cursor;
        total = page.total;
        draw();
      },
      (err) => {
        // A filter naming no VM is the operator's typo: say so, show nothing.
        showError(messageOf(err));
        shown = [];
        cursor = null;
        total = 0;
        draw();
      },
    );
  }

  more.addEventListener("click", async () => {
    if (!cursor) return;
    more.setAttribute("disabled", "");
    try {
      await loader.run(
        () => ctx.api.get("/tasks", { ...query(), limit: PAGE, cursor }),
        (page) => {
          const seen = new Set(shown.map((t) => t.id));
          shown = shown.concat(page.items.filter((/** @type {Task} */ t) => !seen.has(t.id)));
          cursor = page.next_cursor;
          total = page.total;
          draw();
        },
      );
    } finally {
      more.removeAttribute("disabled");
    }
  });

  const refresh = debounce(() => void reload(), 300);
  const refilter = debounce(() => {
    shown = [];
    void reload();
  }, 400);
  active.addEventListener("change", () => {
    shown = [];
    void reload();
  });
  vm.addEventListener("input", refilter);
  filters.addEventListener("submit", (e) => {
    e.preventDefault();
    shown = [];
    void reload();
  });

  ctx.onEvent((e) => {
    if (e.task_id || e.kind === "stream.connected") refresh();
  });
  // A running task's progress moves without events (a migration's percentage).
  ctx.every(() => {
    if (shown.some((t) => !taskFinished(t))) refresh();
  }, 1000);
  await reload();
}

/**
 * The VM a task is about, else the volume of a volume task ("volume data1"; no VM), else
 * nothing (its node has a column of its own).
 * @param {Task} t
 */
function subjectCell(t) {
  const subject = taskSubject(t);
  if (subject?.kind === "vm") return vmLink(t.vm);
  if (subject?.kind === "volume") {
    return h("span", { class: "nowrap" }, h("span", { class: "muted" }, "volume "), subjectLink(t));
  }
  return null;
}

/**
 * How long the task took (or has taken so far).
 * @param {Task} t
 * @param {number} now
 */
function took(t, now) {
  const start = Date.parse(t.created_at);
  const end = t.finished_at ? Date.parse(t.finished_at) : now;
  return Number.isNaN(start) || Number.isNaN(end) ? "" : duration(Math.max(0, (end - start) / 1000));
}
