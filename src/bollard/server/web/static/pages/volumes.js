// @ts-check
/** `#/volumes`: every volume with its state, pool, node, size, format, the VM it is attached
 * to and the task driving it; filters by pool and state (the API's); a "Create volume" form
 * for those with volume.manage (operator). Live: refreshed on volume events and on events
 * of the tasks driving the volumes shown, and every 10 s. */
import { h, replace } from "../js/dom.js";
import { actionButton, messageOf, showError } from "../js/ui.js";
import { keepFresh, stillShown } from "./nodes_table.js";
import { volumeCreateForm } from "./storage_forms.js";
import { VOLUME_STATES, concernsVolume, volumeRoute, volumeTable } from "./storage_parts.js";
import { redraw, select } from "./vm_common.js";

/** The filters, kept while the console is open (coming back from a volume finds them set). */
const filters = { pool: "", state: "" };

/**
 * @param {import("../js/ui.js").Ctx} ctx
 */
export async function render(ctx) {
  const hash = window.location.hash;
  /** @type {string[]} */
  let poolNames = [];
  /** the tasks driving the volumes shown */
  let taskIds = new Set();
  /** loads started: only the newest one draws (a filter changed while one was under way) */
  let loads = 0;

  const poolSelect = select("pool", [], filters.pool);
  poolSelect.id = "volumes-pool";
  poolSelect.dataset.testid = "volume-filter-pool";
  const stateSelect = select("state", [], filters.state);
  stateSelect.id = "volumes-state";
  stateSelect.dataset.testid = "volume-filter-state";
  const count = h("span", { class: "muted", "data-testid": "volume-count", "aria-live": "polite" });
  const formBox = h("div");
  const tableBox = h("div", { "data-testid": "volumes-table" });

  const open = actionButton(ctx, "volume.manage", "volume-create-open", "Create volume", async () => {
    if (formBox.firstChild) {
      close();
      return;
    }
    const [pools, nodes] = await Promise.all([ctx.api.all("/pools"), ctx.api.all("/nodes")]);
    const { form, focus } = volumeCreateForm(
      ctx,
      pools,
      nodes.map((/** @type {any} */ n) => String(n.name)),
      (answer) => ctx.go(volumeRoute(answer.volume.name)),
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

  function drawFilters() {
    const pools = [...new Set([...poolNames, filters.pool].filter(Boolean))].sort();
    redraw(poolSelect, JSON.stringify([pools, filters.pool]), () => [
      h("option", { value: "" }, "any"),
      pools.map((p) => h("option", { value: p, selected: p === filters.pool }, p)),
    ]);
    redraw(stateSelect, JSON.stringify(filters.state), () => [
      h("option", { value: "" }, "any"),
      VOLUME_STATES.map((s) => h("option", { value: s, selected: s === filters.state }, s)),
    ]);
  }

  async function load() {
    const mine = ++loads;
    const query = { pool: filters.pool || null, state: filters.state || null };
    const [pools, page] = await Promise.all([
      ctx.api.all("/pools"),
      ctx.api.get("/volumes", { ...query, limit: 500 }),
    ]);
    if (mine !== loads) return;
    poolNames = pools.map((/** @type {any} */ p) => String(p.name));
    /** @type {import("./storage_parts.js").Volume[]} */
    const volumes = page.items;
    taskIds = new Set(volumes.map((v) => v.task_id).filter((id) => id !== null));
    drawFilters();
    const filtered = Boolean(query.pool || query.state);
    const total = typeof page.total === "number" ? page.total : volumes.length;
    count.textContent =
      volumes.length < total ? `${volumes.length} of ${total} volumes shown` : `${total} volume${total === 1 ? "" : "s"}`;
    redraw(tableBox, JSON.stringify(volumes), () =>
      volumeTable(volumes, { empty: filtered ? "No volume matches the filters." : "No volumes yet." }),
    );
  }

  async function reload() {
    try {
      await load();
    } catch (err) {
      showError(messageOf(err));
    }
  }

  poolSelect.addEventListener("change", () => {
    filters.pool = /** @type {HTMLSelectElement} */ (poolSelect).value;
    void reload();
  });
  stateSelect.addEventListener("change", () => {
    filters.state = /** @type {HTMLSelectElement} */ (stateSelect).value;
    void reload();
  });

  await load();
  if (!stillShown(hash)) return;
  const filterForm = h(
    "form",
    { class: "toolbar filters", role: "search", "aria-label": "Filter volumes" },
    h("label", { for: "volumes-pool" }, "Pool"),
    poolSelect,
    h("label", { for: "volumes-state" }, "State"),
    stateSelect,
    count,
  );
  filterForm.addEventListener("submit", (e) => e.preventDefault());
  replace(
    ctx.view,
    h(
      "div",
      { class: "storage-page" },
      h("div", { class: "page-head" }, h("h1", null, "Volumes"), open),
      formBox,
      filterForm,
      tableBox,
    ),
  );
  keepFresh(ctx, load, (e) => concernsVolume(e) || (e.task_id !== null && taskIds.has(e.task_id)), 10000);
}
