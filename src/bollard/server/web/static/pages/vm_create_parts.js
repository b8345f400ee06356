// @ts-check
/** Parts of the create-VM form: the lists of disks and NICs (rows added and removed by the
 * user), and reading the number fields as the API should judge them. */
import { h, replace } from "../js/dom.js";
import { errorSlot, select } from "./vm_common.js";

/** At most this many of each (domain/models.py MAX_DISKS, MAX_NICS). */
export const MAX_DISKS = 16;
export const MAX_NICS = 8;
const NIC_MODELS = ["virtio", "e1000", "rtl8139"];
const UNITS = /** @type {Record<string, number>} */ ({ MiB: 1, GiB: 1024, TiB: 1024 * 1024 });

/**
 * A number field's value for the request body: undefined when empty (the API then says the
 * field is required, where it is), else the number.
 * @param {HTMLInputElement} input
 * @returns {number | undefined}
 */
export function numberOf(input) {
  const text = input.value.trim();
  if (text === "") return undefined;
  const n = Number(text);
  return Number.isFinite(n) ? n : undefined;
}

/**
 * The device name of the disk at `index`: vda, vdb, ...
 * @param {number} index
 */
export function device(index) {
  return `vd${String.fromCharCode(97 + index)}`;
}

/**
 * A list of rows (disks or NICs) with "Add" and "Remove" buttons. Rows are numbered in
 * order; their fields are named `<list>[i].<field>` as the API names them in its errors.
 */
class RowList {
  /**
   * @param {string} list "disks" or "nics"
   * @param {string} addLabel
   * @param {number} max
   * @param {(index: number) => HTMLElement[]} cells the controls of a new row (named later)
   */
  constructor(list, addLabel, max, cells) {
    this.list = list;
    this.max = max;
    this.cells = cells;
    /** @type {HTMLElement[]} */
    this.rows = [];
    this.body = h("div", { class: "rows", dataset: { testid: `${list}-rows` } });
    this.add = h("button", { type: "button", dataset: { testid: `${list}-add` } }, addLabel);
    this.add.addEventListener("click", () => {
      this.append();
      const first = this.rows[this.rows.length - 1]?.querySelector("input, select");
      if (first instanceof HTMLElement) first.focus();
    });
    this.root = h("div", null, this.body, errorSlot(list), this.add);
  }

  append() {
    if (this.rows.length >= this.max) return;
    const row = h("div", { class: "row", dataset: { testid: `${this.list}-row` } }, this.cells(this.rows.length));
    const remove = h("button", { type: "button", class: "link", dataset: { testid: `${this.list}-remove` } }, "Remove");
    remove.addEventListener("click", () => {
      this.rows = this.rows.filter((r) => r !== row);
      this.renumber();
      this.add.focus();
    });
    row.append(remove, errorSlot(""));
    this.rows.push(row);
    this.renumber();
  }

  /** Name every row's fields by its index again (after a removal), and redraw. */
  renumber() {
    this.rows.forEach((row, i) => {
      for (const control of row.querySelectorAll("[data-key]")) {
        const key = /** @type {HTMLElement} */ (control).dataset.key;
        control.setAttribute("name", `${this.list}[${i}].${key}`);
        control.id = `f-${this.list}-${i}-${/** @type {HTMLElement} */ (control).dataset.cell}`;
      }
      for (const label of row.querySelectorAll("label[data-key-for]")) {
        label.setAttribute("for", `f-${this.list}-${i}-${/** @type {HTMLElement} */ (label).dataset.keyFor}`);
      }
      const slot = /** @type {HTMLElement} */ (row.querySelector(".field-error"));
      slot.dataset.errorFor = `${this.list}[${i}]`;
      slot.id = `error-${this.list}_${i}_`;
      const title = row.querySelector(".row-title");
      if (title) title.textContent = this.list === "disks" ? device(i) : `NIC ${i + 1}`;
    });
    replace(this.body, this.rows);
    this.add.toggleAttribute("disabled", this.rows.length >= this.max);
  }
}

/**
 * @param {string} key
 * @param {string} text
 * @param {HTMLElement} control
 */
function cell(key, text, control) {
  control.dataset.key = key;
  control.dataset.cell = key; // (the key may change: a NIC's bridge or network)
  return h("span", { class: "cell" }, h("label", { dataset: { keyFor: key } }, text), control);
}

/** The disks part: rows of a size and its unit. */
export function diskList() {
  const rows = new RowList("disks", "Add disk", MAX_DISKS, () => [
    h("span", { class: "row-title" }),
    cell("size_mb", "Size", h("input", { type: "number", min: 1, step: "any", value: 10, inputmode: "decimal" })),
    cell("unit", "Unit", select("unit", Object.keys(UNITS).map((u) => [u, u]), "GiB")),
  ]);
  return {
    root: rows.root,
    /** The `disks` of the request body. */
    value() {
      return rows.rows.map((row) => {
        const size = numberOf(/** @type {HTMLInputElement} */ (row.querySelector("[data-key=size_mb]")));
        const unit = /** @type {HTMLSelectElement} */ (row.querySelector("[data-key=unit]")).value;
        return size === undefined ? {} : { size_mb: Math.round(size * (UNITS[unit] ?? 1)) };
      });
    },
  };
}

/** The NICs part: rows of network or bridge, its name, the model and an optional MAC. */
export function nicList() {
  const rows = new RowList("nics", "Add NIC", MAX_NICS, () => {
    const on = select("on", [["bridge", "bridge"], ["network", "network"]], "bridge");
    const attachment = h("input", { type: "text", value: "", placeholder: "br0", autocomplete: "off" });
    const nameCell = cell("bridge", "Name", attachment);
    // The name field is named as the API names it: nics[i].bridge or nics[i].network.
    on.addEventListener("change", () => {
      const kind = /** @type {HTMLSelectElement} */ (on).value;
      const old = attachment.dataset.key ?? "bridge";
      attachment.dataset.key = kind;
      attachment.setAttribute("name", (attachment.getAttribute("name") ?? "").replace(new RegExp(`\\.${old}$`), `.${kind}`));
      attachment.setAttribute("placeholder", kind === "bridge" ? "br0" : "default");
    });
    return [
      h("span", { class: "row-title" }),
      cell("on", "On a", on),
      nameCell,
      cell("model", "Model", select("model", NIC_MODELS.map((m) => [m, m]), "virtio")),
      cell("mac", "MAC (optional)", h("input", { type: "text", value: "", placeholder: "52:54:00:…", autocomplete: "off" })),
    ];
  });
  return {
    root: rows.root,
    /** The `nics` of the request body. */
    value() {
      return rows.rows.map((row) => {
        /** @param {string} key */
        const get = (key) => /** @type {HTMLInputElement} */ (row.querySelector(`[data-key=${key}]`)).value.trim();
        const kind = get("on");
        /** @type {Record<string, string>} */
        const nic = { [kind]: get(kind), model: get("model") };
        const mac = get("mac");
        if (mac) nic.mac = mac;
        return nic;
      });
    },
  };
}
