// @ts-check
/** The create-VM form's Cell select (through an API server only, from `GET /cells`): the
 * server chooses (the node's cell, else the cell with the most free memory that can take the
 * VM), or one cell; a disabled cell is offered but cannot be chosen. Choosing a cell leaves
 * only its nodes choosable in the form's node select. */
import { h } from "../js/dom.js";
import { cellOptions } from "./cell_parts.js";
import { labelled } from "./vm_common.js";

/**
 * @param {import("./cell_parts.js").Cell[]} cells
 * @param {HTMLElement} nodeSelect the form's node <select> (value "": the scheduler chooses)
 * @param {{name: string, cell?: string | null}[]} nodes the nodes it offers
 */
export function cellField(cells, nodeSelect, nodes) {
  const cellOf = new Map(nodes.map((n) => [n.name, n.cell ?? null]));
  const choice = h(
    "select",
    { name: "cell", "data-testid": "create-cell" },
    cellOptions(cells).map((o) => h("option", { value: o.value, disabled: o.disabled }, o.label)),
  );
  const chosen = () => /** @type {HTMLSelectElement} */ (choice).value;
  const narrow = () => {
    const cell = chosen();
    const select = /** @type {HTMLSelectElement} */ (nodeSelect);
    for (const option of select.querySelectorAll("option")) {
      const node = /** @type {HTMLOptionElement} */ (option);
      node.disabled = Boolean(cell && node.value && cellOf.get(node.value) !== cell);
      if (node.disabled && select.value === node.value) select.value = "";
    }
  };
  choice.addEventListener("change", narrow);
  return {
    root: labelled("cell", "Cell", choice, "Where to create it. The server chooses the node's cell, else the cell with the most free memory; a node chosen below must be in the cell chosen here."),
    /** The `cell` of the request body, or "" (the server chooses). */
    value: chosen,
  };
}
