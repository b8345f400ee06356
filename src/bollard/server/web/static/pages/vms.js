// @ts-check
/** `#/vms`: every VM with its status, node, size, HA policy and running task; filters
 * (status, node, name contains; applied here over the whole list, which the API does not
 * filter); checkboxes and actions on the selected VMs (each VM's request sent, failures
 * named). Through an API server: a Cell column, and the VMs of a cell that did not answer
 * with status UNKNOWN, "–" elsewhere and no link. Refreshes live on VM, node and task events. */
import { h, link, replace, table } from "../js/dom.js";
import { memory, tone } from "../js/format.js";
import { actionButton, badge, confirmDialog, debounce, messageOf, showError } from "../js/ui.js";
import {
  OP_HELP,
  POWER_OPS,
  STATUSES,
  deleteText,
  nodeRoute,
  redraw,
  requestOp,
  select,
  taskRoute,
  vmRoute,
} from "./vm_common.js";
import { nameCell, tolerant, withCellColumn } from "./cell_parts.js";

/** The filters, kept while the console is open (coming back from a VM finds them set). */
const filters = { status: "", node: "", name: "" };
const NO_NODE = "-";

/**
 * @param {import("../js/ui.js").Ctx} ctx
 */
export async function render(ctx) {
  /** @type {any[]} */
  let vms = [];
  /** @type {string[]} */
  let nodeNames = [];
  /** Names of the VMs checked (only the ones shown are acted on). */
  const selected = new Set();

  const statusSelect = select("status", [], filters.status);
  const nodeSelect = select("node", [], filters.node);
  const nameInput = h("input", {
    type: "search",
    name: "name",
    id: "vms-name",
    value: filters.name,
    placeholder: "name contains",
    autocomplete: "off",
    "data-testid": "vm-filter-name",
  });
  statusSelect.id = "vms-status";
  statusSelect.dataset.testid = "vm-filter-status";
  nodeSelect.id = "vms-node";
  nodeSelect.dataset.testid = "vm-filter-node";

  const count = h("span", { class: "muted", "data-testid": "vm-count", "aria-live": "polite" });
  const result = h("span", { class: "muted", "data-testid": "bulk-result", "aria-live": "polite" });
  const tableBox = h("div", { "data-testid": "vm-table" });

  /** The bulk buttons, enabled only while VMs are selected. */
  const bulkButtons = POWER_OPS.map((op) =>
    actionButton(ctx, op.permission, `vms-${op.op}`, op.label, () => bulk(op), {
      title: `${OP_HELP[op.op]} (the VMs selected)`,
      class: op.op === "delete" ? "action danger" : "action",
    }),
  ).filter((b) => b !== null);

  const create = ctx.can("vm.create")
    ? h("a", { href: "#/vms/new", class: "button primary", dataset: { action: "vm-create-open" } }, "Create VM")
    : null;

  replace(
    ctx.view,
    h(
      "div",
      { class: "vm-page" },
      h("div", { class: "page-head" }, h("h1", null, "Virtual machines"), create),
    h(
      "form",
      { class: "toolbar filters", role: "search", "aria-label": "Filter VMs" },
      h("label", { for: "vms-status" }, "Status"),
      statusSelect,
      h("label", { for: "vms-node" }, "Node"),
      nodeSelect,
      h("label", { for: "vms-name" }, "Name"),
      nameInput,
      count,
    ),
    bulkButtons.length > 0
      ? h(
          "div",
          { class: "toolbar", role: "group", "aria-label": "Actions on the selected VMs" },
          h("span", { class: "muted", "data-testid": "vm-selected-count" }, "0 selected"),
          bulkButtons,
          result,
        )
      : null,
      tableBox,
    ),
  );
  // Enter in the name box must not submit (and reload) anything.
  /** @type {HTMLElement} */ (ctx.view.querySelector("form.filters")).addEventListener("submit", (e) => e.preventDefault());

  /** The VMs the filters let through, in the API's order. */
  function shown() {
    const needle = filters.name.trim().toLowerCase();
    return vms.filter(
      (vm) =>
        (!filters.status || vm.status === filters.status) &&
        (!filters.node || (filters.node === NO_NODE ? !vm.node : vm.node === filters.node)) &&
        (!needle || vm.name.toLowerCase().includes(needle)),
    );
  }

  /** The selected VMs that are shown: what a bulk action acts on. */
  function targets() {
    return shown()
      .map((vm) => String(vm.name))
      .filter((name) => selected.has(name));
  }

  function drawFilters() {
    const statuses = [...new Set([...STATUSES, ...vms.map((vm) => vm.status)])];
    const nodes = [...new Set([...nodeNames, ...vms.map((vm) => vm.node).filter(Boolean)])].sort();
    redraw(statusSelect, JSON.stringify([statuses, filters.status]), () => [
      h("option", { value: "" }, "any"),
      ...statuses.map((s) => h("option", { value: s, selected: s === filters.status }, s)),
    ]);
    redraw(nodeSelect, JSON.stringify([nodes, filters.node]), () => [
      h("option", { value: "" }, "any"),
      h("option", { value: NO_NODE, selected: filters.node === NO_NODE }, "(no node)"),
      ...nodes.map((n) => h("option", { value: n, selected: n === filters.node }, n)),
    ]);
  }

  function drawSelection() {
    const names = targets();
    const rows = shown();
    for (const box of tableBox.querySelectorAll("input[data-testid=vm-select]")) {
      const input = /** @type {HTMLInputElement} */ (box);
      input.checked = selected.has(input.value);
    }
    const all = /** @type {HTMLInputElement | null} */ (tableBox.querySelector("input[data-testid=vm-select-all]"));
    if (all) {
      all.disabled = rows.length === 0;
      all.checked = rows.length > 0 && names.length === rows.length;
      all.indeterminate = names.length > 0 && names.length < rows.length;
    }
    const label = ctx.view.querySelector("[data-testid=vm-selected-count]");
    if (label) label.textContent = `${names.length} selected`;
    for (const button of bulkButtons) {
      if (button.getAttribute("aria-busy") === "true") continue;
      if (names.length === 0) button.setAttribute("disabled", "");
      else button.removeAttribute("disabled");
    }
  }

  function draw() {
    drawFilters();
    const rows = shown();
    const plural = vms.length === 1 ? "VM" : "VMs";
    count.textContent = rows.length === vms.length ? `${vms.length} ${plural}` : `${rows.length} of ${vms.length} ${plural}`;
    const selectable = bulkButtons.length > 0;
    const selectAll = h("input", {
      type: "checkbox",
      "data-testid": "vm-select-all",
      "aria-label": "Select all VMs shown",
    });
    selectAll.addEventListener("change", () => {
      const on = /** @type {HTMLInputElement} */ (selectAll).checked;
      for (const vm of shown()) {
        if (on) selected.add(vm.name);
        else selected.delete(vm.name);
      }
      drawSelection();
    });
    /** @type {import("../js/dom.js").Column<any>[]} */
    const columns = [
      {
        title: "",
        field: "select",
        cell: (vm) => {
          const box = h("input", {
            type: "checkbox",
            value: vm.name,
            "data-testid": "vm-select",
            "aria-label": `Select ${vm.name}`,
          });
          box.addEventListener("change", () => {
            if (/** @type {HTMLInputElement} */ (box).checked) selected.add(vm.name);
            else selected.delete(vm.name);
            drawSelection();
          });
          return box;
        },
      },
      { title: "Name", field: "name", cell: (vm) => nameCell(vm, vmRoute(vm.name)) },
      { title: "Status", field: "status", cell: (vm) => badge(vm.status, tone(vm.status)) },
      { title: "Node", field: "node", cell: (vm) => (vm.node ? link(nodeRoute(vm.node), vm.node) : "–") },
      { title: "Power (host)", field: "power", cell: (vm) => vm.observed_power },
      { title: "vCPUs", field: "vcpus", cell: (vm) => vm.vcpus },
      { title: "Memory", field: "memory", cell: (vm) => memory(vm.memory_mb) },
      { title: "HA", field: "ha", cell: (vm) => (vm.ha_priority ? `${vm.ha} (${vm.ha_priority})` : vm.ha) },
      {
        title: "Task",
        field: "task",
        cell: (vm) =>
          vm.task_id ? link(taskRoute(vm.task_id), vm.task_state ?? "task") : vm.task_state ?? "",
      },
    ];
    // (a VM of a cell that did not answer has only its name, cell and status)
    const all = tolerant(withCellColumn(columns, vms), ["select", "name", "status", "cell"]);
    const shownColumns = selectable ? all : all.slice(1);
    const signature = JSON.stringify([rows, selectable]);
    redraw(tableBox, signature, () => {
      const wrap = table(
        shownColumns,
        rows,
        (vm) => ({ dataset: { testid: "vm-row", vm: vm.name, status: vm.status } }),
        vms.length === 0 ? "No VMs yet." : "No VM matches the filters.",
      );
      if (selectable) {
        const first = /** @type {HTMLElement} */ (wrap.querySelector("thead th"));
        first.replaceChildren(selectAll);
      }
      return wrap;
    });
    drawSelection();
  }

  async function load() {
    const [items, nodes] = await Promise.all([ctx.api.all("/vms"), ctx.api.all("/nodes")]);
    vms = items;
    nodeNames = nodes.map((/** @type {any} */ n) => String(n.name));
    const names = new Set(vms.map((vm) => vm.name));
    for (const name of [...selected]) if (!names.has(name)) selected.delete(name);
    draw();
  }

  async function reload() {
    try {
      await load();
    } catch (err) {
      showError(messageOf(err));
    }
  }

  /**
   * Send `op` for every selected VM shown; name each one that failed.
   * @param {import("./vm_common.js").PowerOp} op
   */
  async function bulk(op) {
    const names = targets();
    if (names.length === 0) return;
    if (op.op === "delete") {
      const title = names.length === 1 ? `Delete ${names[0]}?` : `Delete ${names.length} VMs?`;
      if (!(await confirmDialog(title, deleteText(names), "Delete"))) return;
    }
    result.textContent = "";
    const answers = await Promise.allSettled(names.map((name) => requestOp(ctx.api, name, op.op)));
    /** @type {string[]} */
    const failed = [];
    answers.forEach((answer, i) => {
      if (answer.status === "rejected") failed.push(`${names[i]}: ${messageOf(answer.reason)}`);
      else if (op.op === "delete") selected.delete(names[i]);
    });
    const ok = names.length - failed.length;
    result.textContent = ok > 0 ? `${op.done} ${ok} VM${ok === 1 ? "" : "s"}: see the task panel.` : "";
    await reload();
    if (failed.length > 0) {
      const how = names.length === 1 ? "" : ` for ${failed.length} of ${names.length} VMs`;
      throw new Error(`${op.label} failed${how}: ${failed.join("; ")}`);
    }
  }

  const refresh = debounce(() => void reload(), 300);
  statusSelect.addEventListener("change", () => {
    filters.status = /** @type {HTMLSelectElement} */ (statusSelect).value;
    draw();
  });
  nodeSelect.addEventListener("change", () => {
    filters.node = /** @type {HTMLSelectElement} */ (nodeSelect).value;
    draw();
  });
  const typed = debounce(() => draw(), 150);
  nameInput.addEventListener("input", () => {
    filters.name = /** @type {HTMLInputElement} */ (nameInput).value;
    typed();
  });

  await load();
  ctx.onEvent((e) => {
    if (e.vm || e.node || e.task_id || e.kind === "stream.connected") refresh();
  });
  // A VM's status turns UNKNOWN when its node falls silent, which no event says at once.
  ctx.every(refresh, 10000);
}
