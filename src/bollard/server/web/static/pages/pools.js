// @ts-check
/** `#/pools`: every storage pool with its type, path, nodes, volume count, provisioned size
 * and how full it is; a "Create pool" form for those with pool.manage (admin). Live:
 * refreshed on pool and volume events, and every 10 s (the hosts' reports of free room come
 * without events). */
import { h, replace } from "../js/dom.js";
import { actionButton } from "../js/ui.js";
import { keepFresh, stillShown } from "./nodes_table.js";
import { poolCreateForm } from "./storage_forms.js";
import { concernsPool, poolRoute, poolTable } from "./storage_parts.js";
import { redraw } from "./vm_common.js";

/**
 * @param {import("../js/ui.js").Ctx} ctx
 */
export async function render(ctx) {
  const hash = window.location.hash;
  const count = h("span", { class: "muted", "data-testid": "pool-count", "aria-live": "polite" });
  const formBox = h("div");
  const tableBox = h("div", { "data-testid": "pools-table" });

  const open = actionButton(ctx, "pool.manage", "pool-create-open", "Create pool", async () => {
    if (formBox.firstChild) {
      close();
      return;
    }
    const nodes = await ctx.api.all("/nodes");
    const { form, focus } = poolCreateForm(
      ctx,
      nodes.map((/** @type {any} */ n) => String(n.name)),
      (pool) => ctx.go(poolRoute(pool.name)),
      close,
    );
    replace(formBox, form);
    open?.setAttribute("aria-expanded", "true");
    focus();
  }, { class: "action primary", "aria-expanded": "false" });

  function close() {
    replace(formBox);
    open?.setAttribute("aria-expanded", "false");
    open?.focus();
  }

  async function load() {
    /** @type {import("./storage_parts.js").Pool[]} */
    const pools = await ctx.api.all("/pools");
    count.textContent = `${pools.length} pool${pools.length === 1 ? "" : "s"}`;
    redraw(tableBox, JSON.stringify(pools), () => poolTable(pools));
  }

  await load();
  if (!stillShown(hash)) return;
  replace(
    ctx.view,
    h(
      "div",
      { class: "storage-page" },
      h("div", { class: "page-head" }, h("h1", null, "Storage pools"), count, open),
      formBox,
      tableBox,
    ),
  );
  keepFresh(ctx, load, (e) => concernsPool(e), 10000);
}
