// @ts-check
/** Migrations (`#/migrations`, `#/migrations?vm=NAME`): every migration record newest first
 * (`GET /migrations`): migrations, live migrations, resizes and evacuations, with where
 * from and to, the status, a resize's old and new flavor and the hold its source keeps until
 * it is confirmed or reverted, the task and the error. Filter: one VM. Pages of 100 ("Show
 * more"); live: reloaded on every event of a VM or a task, and every 2 s while one is under
 * way. */
import { h, replace } from "../js/dom.js";
import { debounce, messageOf, showError } from "../js/ui.js";
import { Loader, field } from "./ops_parts.js";
import { migrationOpen, migrationTable, vmOfQuery } from "./resize_parts.js";

const PAGE = 100;
const MAX_PAGE = 1000;

/** @typedef {import("./resize_parts.js").Migration} Migration */

/**
 * @param {import("../js/ui.js").Ctx} ctx
 * @param {{query?: string}} params
 */
export async function render(ctx, params) {
  const vm = /** @type {HTMLInputElement} */ (
    h("input", { type: "search", name: "vm", placeholder: "VM name", autocomplete: "off", "data-testid": "migrations-vm", value: vmOfQuery(params.query) })
  );
  const summary = h("span", { class: "muted", "data-testid": "migrations-summary", "aria-live": "polite" });
  const results = h("div", { "data-testid": "migrations-results" });
  const more = h("button", { type: "button", "data-testid": "migrations-more", hidden: true }, "Show more");
  const filters = h("form", { class: "toolbar", role: "search", "aria-label": "Filter migrations" }, field("VM", vm), summary);
  replace(
    ctx.view,
    h(
      "div",
      { class: "ops-page" },
      h("h1", null, "Migrations"),
      h(
        "p",
        { class: "muted" },
        "Every move of a VM between nodes, newest first: migrations, live migrations, resizes (with their old and " +
          "new flavor, and what the source keeps for a revert until the resize is confirmed) and evacuations.",
      ),
      filters,
      results,
      h("div", { class: "toolbar" }, more),
    ),
  );

  /** @type {Migration[]} */
  let shown = [];
  /** @type {string | null} */
  let cursor = null;
  let total = 0;
  const loader = new Loader(results);
  const query = () => ({ vm: vm.value.trim() || null });

  function draw() {
    replace(results, migrationTable(shown, Date.now(), query().vm ? "No migration of this VM." : "No migrations yet."));
    summary.textContent = `${shown.length} of ${total}`;
    more.hidden = cursor === null;
  }

  /** Reload from the newest, as many as are shown (a live refresh keeps "Show more"). */
  async function reload() {
    const limit = Math.min(Math.max(PAGE, shown.length), MAX_PAGE);
    await loader.run(
      () => ctx.api.get("/migrations", { ...query(), limit }),
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
        () => ctx.api.get("/migrations", { ...query(), limit: PAGE, cursor }),
        (page) => {
          const seen = new Set(shown.map((m) => m.id));
          shown = shown.concat(page.items.filter((/** @type {Migration} */ m) => !seen.has(m.id)));
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
  vm.addEventListener("input", refilter);
  filters.addEventListener("submit", (e) => {
    e.preventDefault();
    shown = [];
    void reload();
  });
  ctx.onEvent((e) => {
    if (e.kind === "stream.connected" || e.vm || e.task_id) refresh();
  });
  ctx.every(() => {
    if (shown.some(migrationOpen)) refresh();
  }, 2000);
  await reload();
}
