// @ts-check
/** Nodes (`#/nodes`): every node with health, scheduling, connection, capacity bars, driver,
 * load and power driver, filtered by a text box (name, health, scheduling or driver).
 * Live: refreshed on node and VM events, and every 5 s (heartbeat ages). */
import { h, replace } from "../js/dom.js";
import { keepFresh, loadNodes, nodeTable, stillShown, swap } from "./nodes_table.js";

const FILTER_KEY = "bollard.nodes.filter";

/**
 * Whether a node matches the filter text: every word of it is found in the node's name,
 * health, scheduling state, driver, power driver or cell.
 * @param {import("./nodes_table.js").Node} node
 * @param {string} text
 */
export function matches(node, text) {
  // (a node of a cell that did not answer has only its name, cell and health)
  const connected = node.connected === undefined ? "" : node.connected ? "connected" : "disconnected";
  const hay = [node.name, node.health, node.scheduling ?? "", node.driver ?? "", node.power?.driver ?? "", connected, node.cell ?? ""]
    .join(" ")
    .toLowerCase();
  return text
    .toLowerCase()
    .split(/\s+/)
    .filter(Boolean)
    .every((word) => hay.includes(word));
}

/**
 * @param {import("../js/ui.js").Ctx} ctx
 */
export async function render(ctx) {
  const hash = window.location.hash;
  /** @type {import("./nodes_table.js").NodeData | null} */
  let data = null;
  const filter = /** @type {HTMLInputElement} */ (
    h("input", {
      id: "node-filter",
      type: "search",
      "data-testid": "node-filter",
      placeholder: "name, health, driver…",
      autocomplete: "off",
      value: sessionStorage.getItem(FILTER_KEY) ?? "",
    })
  );
  const count = h("span", { class: "muted", "data-testid": "node-count", "aria-live": "polite" });
  const box = h("div", { "data-testid": "nodes-table" });

  function draw() {
    if (data === null) return;
    const text = filter.value.trim();
    const shown = data.nodes.filter((n) => matches(n, text));
    count.textContent = text ? `${shown.length} of ${data.nodes.length} nodes` : `${data.nodes.length} nodes`;
    const empty = data.nodes.length > 0 ? `No node matches “${text}”.` : undefined;
    swap(box, nodeTable(shown, data.provisioned, { extra: true, empty }));
  }

  async function load() {
    data = await loadNodes(ctx.api);
    draw();
  }

  filter.addEventListener("input", () => {
    sessionStorage.setItem(FILTER_KEY, filter.value);
    draw();
  });

  await load();
  if (!stillShown(hash)) return;
  replace(
    ctx.view,
    h("h1", null, "Nodes"),
    h("div", { class: "toolbar", role: "search" }, h("label", { for: "node-filter" }, "Filter"), filter, count),
    box,
  );
  keepFresh(ctx, load, (e) => Boolean(e.node || e.vm), 5000);
}
