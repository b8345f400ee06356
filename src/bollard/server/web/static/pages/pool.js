// @ts-check
/** `#/pools/NAME`: one storage pool: what it is (type, path, nodes, description), how full
 * it is on each host that reported it, its volumes, and "Delete" (pool.manage, after a
 * confirmation; the server refuses while it holds volumes). Live: refreshed on its pool
 * and volume events, and every 10 s (the hosts' reports). */
import { ApiError, pathOf } from "../js/api.js";
import { facts, h, link, replace } from "../js/dom.js";
import { memory, when } from "../js/format.js";
import { actionButton, confirmDialog } from "../js/ui.js";
import { keepFresh, stillShown } from "./nodes_table.js";
import { concernsPool, deletePoolText, fullnessBar, hostTable, nodesText, pathText, volumeTable } from "./storage_parts.js";
import { redraw } from "./vm_common.js";

/**
 * @param {import("../js/ui.js").Ctx} ctx
 * @param {{name: string}} params
 */
export async function render(ctx, params) {
  const hash = window.location.hash;
  const name = params.name;
  const path = pathOf("pools", name);
  /** @type {import("./storage_parts.js").Pool | null} */
  let pool = null;
  let gone = false;

  const title = h("h1", null, `Pool ${name}`);
  const goneNote = h("p", { "data-testid": "pool-gone", hidden: true }, `There is no pool ${name} (any more).`);
  const actions = h("div", { class: "toolbar", role: "group", "aria-label": "Actions" });
  const factsBox = h("section", { class: "card", "data-testid": "pool-facts", "aria-labelledby": "pool-facts-h" });
  const hostsBox = h("div", { "data-testid": "pool-hosts" });
  const volumesTitle = h("h2", { id: "pool-volumes-h" }, "Volumes");
  const volumesBox = h("div", { "data-testid": "pool-volumes" });

  const remove = actionButton(
    ctx,
    "pool.manage",
    "pool-delete",
    "Delete",
    async () => {
      const ok = await confirmDialog(`Delete pool ${name}?`, deletePoolText(name, pool?.volumes ?? 0), "Delete");
      if (!ok) return;
      await ctx.api.del(path);
      ctx.go("#/pools");
    },
    { class: "action danger" },
  );
  replace(actions, remove);
  actions.hidden = remove === null;

  async function load() {
    if (gone) return;
    let current;
    let volumes;
    try {
      [current, volumes] = await Promise.all([ctx.api.get(path), ctx.api.all("/volumes", { pool: name })]);
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) {
        gone = true;
        replace(actions);
        actions.hidden = true;
        goneNote.hidden = false;
        return;
      }
      throw err;
    }
    pool = current;
    const now = Date.now();
    redraw(factsBox, JSON.stringify(current), () => [h("h2", { id: "pool-facts-h" }, "Pool"), poolFacts(current)]);
    redraw(hostsBox, JSON.stringify([current.hosts, Math.round(now / 10000)]), () => hostTable(current.hosts, now));
    volumesTitle.textContent = `Volumes in ${name} (${volumes.length})`;
    redraw(volumesBox, JSON.stringify(volumes), () =>
      volumeTable(volumes, { pool: false, empty: "No volumes in this pool." }),
    );
  }

  await load();
  if (!stillShown(hash)) return;
  replace(
    ctx.view,
    h(
      "div",
      { class: "storage-page" },
      title,
      goneNote,
      actions,
      factsBox,
      h("section", { "aria-labelledby": "pool-hosts-h" }, h("h2", { id: "pool-hosts-h" }, "On each host"), hostsBox),
      h("section", { "aria-labelledby": "pool-volumes-h" }, volumesTitle, volumesBox),
      h("p", null, link("#/pools", "All pools")),
    ),
  );
  keepFresh(ctx, load, (e) => concernsPool(e, name), 10000);
}

/** @param {import("./storage_parts.js").Pool} pool */
function poolFacts(pool) {
  return facts([
    ["Type", pool.type, "type"],
    ["Path", pool.path ? h("code", null, pool.path) : pathText(pool), "path"],
    ["Nodes", nodesText(pool), "nodes"],
    ["Description", pool.description || null, "description"],
    ["Volumes", String(pool.volumes), "volumes"],
    ["Provisioned", memory(pool.provisioned_mb), "provisioned"],
    ["Capacity", narrow(fullnessBar(pool)), "capacity"],
    ["Created", when(pool.created_at), "created_at"],
  ]);
}

/**
 * A bar no wider than 24rem in a list of facts (set through the CSSOM: the
 * Content-Security-Policy refuses style attributes).
 * @param {HTMLElement} el
 */
function narrow(el) {
  el.style.maxWidth = "24rem";
  return el;
}
