// @ts-check
/** Parts of the create-VM form: the lists of disks (each with its size and pool) and NICs
 * (rows added and removed by the user), and reading the number fields as the API should
 * judge them. */
import { h, replace } from "../js/dom.js";
import { memory } from "../js/format.js";
import { errorSlot, select } from "./vm_common.js";

/** At most this many of each (domain/models.py MAX_DISKS, MAX_NICS). */
export const MAX_DISKS = 16;
export const MAX_NICS = 8;
const NIC_MODELS = ["virtio", "e1000", "rtl8139"];
const UNITS = /** @type {Record<string, number>} */ ({ MiB: 1, GiB: 1024, TiB: 1024 * 1024 });
/** The pool of a disk when none is chosen (the server's default too: each host's own directory). */
export const DEFAULT_POOL = "local";

/**
 * @typedef {{name: string, type: string, free_mb?: number | null}} PoolChoice a pool as
 *   GET /pools gives it (the fields the form uses)
 */

/**
 * The options of a disk's pool select: [name, "name (type, 12 GiB free)"], by name, `local`
 * first (the default).
 * @param {PoolChoice[]} pools
 * @returns {[string, string][]}
 */
export function poolOptions(pools) {
  const sorted = [...pools].sort((a, b) =>
    a.name === DEFAULT_POOL ? -1 : b.name === DEFAULT_POOL ? 1 : a.name.localeCompare(b.name),
  );
  return sorted.map((p) => {
    const free = p.free_mb === null || p.free_mb === undefined ? "" : `, ${memory(p.free_mb)} free`;
    return [p.name, `${p.name} (${p.type}${free})`];
  });
}

/**
 * The pool a new disk row starts with: `local` when there is one, else the first.
 * @param {PoolChoice[]} pools
 */
export function defaultPool(pools) {
  return pools.some((p) => p.name === DEFAULT_POOL) ? DEFAULT_POOL : (poolOptions(pools)[0]?.[0] ?? DEFAULT_POOL);
}

/**
 * A disk of the request body: {size_mb, pool}; size_mb left out when empty (the API then
 * says it is required), in MiB from the number and its unit.
 * @param {number | undefined} size
 * @param {string} unit MiB, GiB or TiB
 * @param {string} pool
 * @returns {{size_mb?: number, pool?: string}}
 */
export function diskBody(size, unit, pool) {
  /** @type {{size_mb?: number, pool?: string}} */
  const disk = {};
  if (size !== undefined) disk.size_mb = Math.round(size * (UNITS[unit] ?? 1));
  if (pool) disk.pool = pool;
  return disk;
}

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
    /** the device of the first row: 0 (vda), or 1 (vdb) after a flavor's root disk */
    this.first = 0;
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
      if (title) title.textContent = this.list === "disks" ? device(i + this.first) : `NIC ${i + 1}`;
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

/**
 * The disks part: rows of a size, its unit and the pool of its volume (`local` first).
 * @param {PoolChoice[]} pools the pools (GET /pools); none: the pool select offers `local`
 */
export function diskList(pools) {
  const options = pools.length > 0 ? poolOptions(pools) : [[DEFAULT_POOL, DEFAULT_POOL]];
  const first = defaultPool(pools);
  const rows = new RowList("disks", "Add disk", MAX_DISKS, () => [
    h("span", { class: "row-title" }),
    cell("size_mb", "Size", h("input", { type: "number", min: 1, step: "any", value: 10, inputmode: "decimal" })),
    cell("unit", "Unit", select("unit", Object.keys(UNITS).map((u) => [u, u]), "GiB")),
    cell("pool", "Pool", select("pool", /** @type {[string, string][]} */ (options), first)),
  ]);
  return {
    root: rows.root,
    /**
     * Name the rows from vdb on when a flavor makes a root disk (vda), else from vda.
     * @param {number} index of the first row's device: 0 (vda) or 1 (vdb)
     */
    startAt(index) {
      rows.first = index;
      rows.renumber();
    },
    /** The `disks` of the request body: [{size_mb, pool}]. */
    value() {
      return rows.rows.map((row) => {
        /** @param {string} key */
        const get = (key) => /** @type {HTMLInputElement} */ (row.querySelector(`[data-key=${key}]`));
        return diskBody(numberOf(get("size_mb")), get("unit").value, get("pool").value);
      });
    },
  };
}

/** What a NIC's name field holds, by what the NIC is on. */
const NIC_PLACEHOLDERS = /** @type {Record<string, string>} */ ({ bridge: "br0", network: "default", sriov: "physnet1" });

/**
 * The NICs part: rows of network, bridge or SR-IOV physical network (with its mode: macvtap or
 * hostdev), its name, the model and an optional MAC.
 */
export function nicList() {
  const rows = new RowList("nics", "Add NIC", MAX_NICS, () => {
    const on = select("on", [["bridge", "bridge"], ["network", "network"], ["sriov", "SR-IOV physnet"]], "bridge");
    const attachment = h("input", { type: "text", value: "", placeholder: "br0", autocomplete: "off" });
    const nameCell = cell("bridge", "Name", attachment);
    const modeCell = cell("mode", "SR-IOV mode", select("mode", [["macvtap", "macvtap"], ["hostdev", "hostdev (shutdown migration only)"]], "macvtap"));
    modeCell.hidden = true;
    // The name field is named as the API names it: nics[i].bridge, .network or .sriov.
    on.addEventListener("change", () => {
      const kind = /** @type {HTMLSelectElement} */ (on).value;
      const old = attachment.dataset.key ?? "bridge";
      attachment.dataset.key = kind;
      attachment.setAttribute("name", (attachment.getAttribute("name") ?? "").replace(new RegExp(`\\.${old}$`), `.${kind}`));
      attachment.setAttribute("placeholder", NIC_PLACEHOLDERS[kind] ?? "");
      modeCell.hidden = kind !== "sriov";
    });
    return [
      h("span", { class: "row-title" }),
      cell("on", "On a", on),
      nameCell,
      modeCell,
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
        if (kind === "sriov") nic.mode = get("mode");
        const mac = get("mac");
        if (mac) nic.mac = mac;
        return nic;
      });
    },
  };
}
