// @ts-check
/** The node page's SR-IOV part: its PFs (from its agent's `--sriov-pf`) and their VFs, with
 * the settings the host reports and the VM whose NIC holds each (`GET
 * /nodes/{name}/sriov`), and a form to change one VF's settings (`PATCH
 * /nodes/{name}/sriov/{pf}/vfs/{vf}`, permission node.sriov, admins), which answers the
 * `vf_set` task that applies them on the host. Only the fields filled in are sent; the API
 * judges the values and its one-line refusal is shown in the error bar. */
import { ApiError, pathOf } from "../js/api.js";
import { h, link, replace, table } from "../js/dom.js";
import { actionButton } from "../js/ui.js";
import { actionForm } from "./storage_forms.js";
import { labelled, redraw, select, vmRoute } from "./vm_common.js";

/** The policy action of a VF change (domain/policy.py). */
export const SRIOV_PERMISSION = "node.sriov";

/** The number fields of a change, as the API names them, with their labels and help. */
export const NUMBER_FIELDS = /** @type {[string, string, string][]} */ ([
  ["vlan", "VLAN", "0 to 4094; 0: no VLAN."],
  ["qos", "QoS", "The VLAN's 802.1p priority, 0 to 7."],
  ["mtu", "MTU", "68 to 65535."],
  ["min_tx_rate", "Min TX rate", "Guaranteed transmit rate, Mbit/s (0: none)."],
  ["max_tx_rate", "Max TX rate", "Transmit rate limit, Mbit/s (0: no limit)."],
]);
/** The on/off fields of a change. */
export const SWITCH_FIELDS = /** @type {[string, string, string][]} */ ([
  ["spoof_check", "Spoof check", "Drop frames whose source MAC is not the VF's."],
  ["trust", "Trust", "Let the guest change its MAC and take multicast or promiscuous mode."],
  ["query_rss", "Query RSS", "Let the guest query the RSS configuration."],
]);
export const LINK_STATES = ["auto", "enable", "disable"];

/**
 * @typedef {Record<string, any>} VfSettings the API's VfSettingsOut (null: not set)
 * @typedef {{index: number, pci: string, netdev: string | null, settings: VfSettings,
 *   applied: VfSettings, differs: string[], used_by: {name: string | null, uuid: string} | null,
 *   mac: string | null, claim_pending: boolean, claim_task: string | null,
 *   host_used_by: {name: string | null, uuid: string} | null}} Vf
 * @typedef {{device: string, physnet: string, pci: string, mtu: number | null,
 *   vfs_total: number, free: number, vfs: Vf[]}} Pf
 * @typedef {{node: string, connected: boolean, pfs: Pf[]}} NodeSriov
 */

/** @param {any} value */
function shown(value) {
  if (value === null || value === undefined) return null;
  if (typeof value === "boolean") return value ? "on" : "off";
  return String(value);
}

/**
 * A setting as the host reports it; `HOST (set WANTED)` when Bollard set another value.
 * @param {Vf} vf
 * @param {string} key
 */
export function settingText(vf, key) {
  const host = shown(vf.applied?.[key]);
  if ((vf.differs ?? []).includes(key)) return `${host ?? "–"} (set ${shown(vf.settings?.[key])})`;
  return host ?? "–";
}

/**
 * Who holds the VF: the VM (its name, else its uuid), "(claim pending)" while the task that
 * claimed it runs; "–" when it is free.
 * @param {Vf} vf
 */
export function holderText(vf) {
  if (!vf.used_by) return "–";
  const who = vf.used_by.name ?? vf.used_by.uuid;
  return vf.claim_pending ? `${who} (claim pending)` : who;
}

/** `ens1f0 on phys1 (0000:03:00.0, MTU 9000): 4 VFs of 8 possible, 3 free` @param {Pf} pf */
export function pfLine(pf) {
  const mtu = pf.mtu ? `, MTU ${pf.mtu}` : "";
  return `${pf.device} on ${pf.physnet} (${pf.pci || "no PCI address"}${mtu}): ${pf.vfs.length} VFs of ${pf.vfs_total} possible, ${pf.free} free`;
}

/**
 * The PATCH body from a form's values (text as typed; "" leaves a setting as it is): whole
 * numbers as numbers, on/off as booleans. `errors` names what is not a whole number (the
 * API judges the ranges).
 * @param {Record<string, string>} values
 * @returns {{body: Record<string, any>, errors: string[]}}
 */
export function changeBody(values) {
  /** @type {Record<string, any>} */
  const body = {};
  const errors = [];
  for (const [key, label] of NUMBER_FIELDS) {
    const text = (values[key] ?? "").trim();
    if (text === "") continue;
    if (!/^-?\d+$/.test(text)) errors.push(`${label}: ${JSON.stringify(text)} is not a whole number`);
    else body[key] = Number(text);
  }
  const mac = (values.mac ?? "").trim();
  if (mac) body.mac = mac;
  for (const [key] of SWITCH_FIELDS) {
    if (values[key] === "on" || values[key] === "off") body[key] = values[key] === "on";
  }
  if (LINK_STATES.includes(values.link_state ?? "")) body.link_state = values.link_state;
  return { body, errors };
}

/** `vlan=100 trust=on` @param {Record<string, any>} body */
export function changeText(body) {
  return Object.entries(body)
    .map(([k, v]) => `${k.replaceAll("_", "-")}=${shown(v)}`)
    .join(" ");
}

/**
 * The node's SR-IOV, or null from a server that has no such route (a cell from before
 * SR-IOV behind an API server); any other failure is the page's.
 * @param {import("../js/ui.js").Ctx} ctx
 * @param {string} name
 * @returns {Promise<NodeSriov | null>}
 */
export async function loadSriov(ctx, name) {
  try {
    return await ctx.api.get(`${pathOf("nodes", name)}/sriov`);
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) return null;
    throw err;
  }
}

/** @param {{name: string | null, uuid: string} | null} ref */
function vmCell(ref) {
  if (!ref) return "–";
  return ref.name ? link(vmRoute(ref.name), ref.name) : h("code", null, ref.uuid);
}

/**
 * The SR-IOV section of the node page: `update(sriov)` draws it (again, when what it shows
 * changed; null: the server does not report SR-IOV). `result` gets the line naming a task
 * started; `refresh` reloads the page.
 * @param {import("../js/ui.js").Ctx} ctx
 * @param {string} name
 * @param {HTMLElement} result
 * @param {() => Promise<void>} refresh
 */
export function nodeSriovSection(ctx, name, result, refresh) {
  const body = h("div", { "data-testid": "node-sriov-body" });
  // (outside the redrawn part: a refresh never takes away a form being filled in)
  const formBox = h("div", { "data-testid": "node-sriov-form-box" });
  const root = h(
    "section",
    { "data-testid": "node-sriov", "aria-labelledby": "node-sriov-h" },
    h("h2", { id: "node-sriov-h" }, "SR-IOV"),
    body,
    formBox,
  );
  /** @type {NodeSriov | null} */
  let current = null;

  /**
   * @param {Pf} pf
   * @param {Vf} vf
   */
  function openForm(pf, vf) {
    replace(formBox, vfForm(ctx, name, pf, vf, result, async () => {
      replace(formBox);
      await refresh();
    }, () => replace(formBox)));
    /** @type {HTMLElement | null} */ (formBox.querySelector("input"))?.focus?.();
  }

  /** @param {NodeSriov} sriov */
  function build(sriov) {
    if (sriov.pfs.length === 0) return h("p", { class: "muted" }, `${name} has no SR-IOV PF (its agent reports none: see --sriov-pf).`);
    const parts = [];
    if (!sriov.connected) parts.push(h("p", { class: "muted" }, `${name} is not connected: VF settings cannot be changed until it is.`));
    for (const pf of sriov.pfs) {
      parts.push(h("h3", { dataset: { pf: pf.device } }, pfLine(pf)));
      parts.push(table(vfColumns(pf), pf.vfs, (vf) => ({ dataset: { vf: `${pf.device}/${vf.index}` } }), "No VFs."));
    }
    return parts;
  }

  /** @param {Pf} pf */
  function vfColumns(pf) {
    /** @type {import("../js/dom.js").Column<Vf>[]} */
    const columns = [
      { title: "VF", field: "index", cell: (vf) => String(vf.index) },
      { title: "PCI", field: "pci", cell: (vf) => h("code", null, vf.pci) },
      { title: "netdev", field: "netdev", cell: (vf) => vf.netdev ?? "–" },
      { title: "VLAN", field: "vlan", cell: (vf) => settingText(vf, "vlan") },
      { title: "MAC", field: "mac", cell: (vf) => (vf.applied?.mac || vf.settings?.mac ? settingText(vf, "mac") : vf.mac ?? "–") },
      { title: "trust", field: "trust", cell: (vf) => settingText(vf, "trust") },
      { title: "spoof check", field: "spoof_check", cell: (vf) => settingText(vf, "spoof_check") },
      { title: "link", field: "link_state", cell: (vf) => settingText(vf, "link_state") },
      { title: "max TX", field: "max_tx_rate", cell: (vf) => settingText(vf, "max_tx_rate") },
      {
        title: "used by",
        field: "used_by",
        cell: (vf) => (vf.used_by ? [vmCell(vf.used_by), vf.claim_pending ? h("span", { class: "muted" }, " (claim pending)") : null] : "–"),
      },
    ];
    if (current?.connected && ctx.can(SRIOV_PERMISSION)) {
      columns.push({
        title: "",
        field: "actions",
        cell: (vf) => actionButton(ctx, SRIOV_PERMISSION, "vf-set", "Set…", async () => openForm(pf, vf), { title: `Change the settings of ${pf.device} VF ${vf.index}` }),
      });
    }
    return columns;
  }

  return {
    root,
    /** @param {NodeSriov | null} sriov */
    update(sriov) {
      current = sriov;
      if (sriov === null) {
        redraw(body, "null", () => h("p", { class: "muted" }, "This server does not report SR-IOV."));
        return;
      }
      redraw(body, JSON.stringify(sriov), () => build(sriov));
    },
  };
}

/**
 * The form that changes one VF: empty fields and "unchanged" leave a setting as it is.
 * @param {import("../js/ui.js").Ctx} ctx
 * @param {string} name
 * @param {Pf} pf
 * @param {Vf} vf
 * @param {HTMLElement} result
 * @param {() => Promise<void>} done
 * @param {() => void} cancel
 */
function vfForm(ctx, name, pf, vf, result, done, cancel) {
  const fields = [];
  for (const [key, label, help] of NUMBER_FIELDS) {
    const now = shown(vf.settings?.[key] ?? vf.applied?.[key]);
    fields.push(labelled(key, label, h("input", { type: "text", name: key, inputmode: "numeric", autocomplete: "off", placeholder: now ?? "unchanged" }), help));
  }
  fields.push(labelled("mac", "MAC", h("input", { type: "text", name: "mac", autocomplete: "off", spellcheck: "false", placeholder: vf.applied?.mac ?? "unchanged" }), vf.used_by ? "Held by a VM: its MAC is the VM NIC's." : "e.g. 52:54:00:12:34:56"));
  for (const [key, label, help] of SWITCH_FIELDS) {
    fields.push(labelled(key, label, select(key, [["", "unchanged"], ["on", "on"], ["off", "off"]], ""), help));
  }
  fields.push(labelled("link_state", "Link state", select("link_state", [["", "unchanged"], ...LINK_STATES.map((s) => /** @type {[string, string]} */ ([s, s]))], ""), "auto follows the PF's link."));
  const title = `Set ${pf.device} VF ${vf.index} on ${name}`;
  return actionForm(
    ctx,
    { testid: "vf-set-form", title, permission: SRIOV_PERMISSION, action: "vf-set-submit", label: "Apply" },
    fields,
    async (form) => {
      /** @type {Record<string, string>} */
      const values = {};
      for (const control of form.querySelectorAll("input, select")) {
        const input = /** @type {HTMLInputElement} */ (control);
        values[input.getAttribute("name") ?? ""] = input.value ?? "";
      }
      const { body, errors } = changeBody(values);
      if (errors.length > 0) throw new Error(errors.join("; "));
      if (Object.keys(body).length === 0) throw new Error("Nothing to change: fill in at least one setting.");
      const path = `${pathOf("nodes", name)}/sriov/${encodeURIComponent(pf.device)}/vfs/${vf.index}`;
      const task = await ctx.api.patch(path, body);
      replace(result, `${pf.device} VF ${vf.index} of ${name}: ${changeText(body)}: task `, link(`#/tasks/${encodeURIComponent(task.id)}`, task.id, { "data-testid": "action-task" }), " started.");
      await done();
    },
    cancel,
  );
}
