// @ts-check
/** Reconcile (`#/reconcile`): the differences between the database and what the hosts
 * report, by class (stale, orphan, power, spec, pending, lost, resize, the storage classes
 * volume-missing, volume-orphan, volume-stuck, volume-size, and the SR-IOV classes
 * vf-unrecorded, vf-conflict, vf-mismatch, vf-leaked), each with its count, what the
 * server does about it by itself (reconcile.auto.<class>: report or fix; volume-orphan's
 * partial fixes only copies' unfinished targets; vf-conflict is reported only, without a
 * Fix button), and a Fix button (operators and admins)
 * after a confirmation saying what fixing that class does. Optionally for one node or one
 * VM. Scanned again on events about VMs, nodes and volumes. */
import { h, link, replace, table } from "../js/dom.js";
import { actionButton, badge, confirmDialog, debounce, messageOf, showError } from "../js/ui.js";
import { Loader, field, nodeLink, vmLink } from "./ops_parts.js";
import { poolRoute, volumeRoute } from "./storage_parts.js";

const CLASSES = ["stale", "orphan", "power", "spec", "pending", "lost", "resize", "volume-missing", "volume-orphan", "volume-stuck", "volume-size", "vf-unrecorded", "vf-conflict", "vf-mismatch", "vf-leaked"];
const STORAGE = new Set(CLASSES.filter((cls) => cls.startsWith("volume-")));
const REPORT_ONLY = new Set(["vf-conflict"]); // no fix: two VMs on one VF is an operator's call

/** What each class is and what fixing it does (as `bollard reconcile --help`), for a
 * server whose settings do not say it. */
const MEANING = /** @type {Record<string, string>} */ ({
  stale: "VMs in the database that their host does not have (fix: delete the record through the delete operation)",
  orphan: "VMs on a host that the database does not have there (fix: destroy them on the host)",
  power: "power state differing from the desired one with no task running (fix: HA VMs get their desired state back; for others the record follows the host)",
  spec: "vCPUs or memory on the host differing from the record (fix: the record follows the host)",
  pending: "task_state left by a task that ended, or a task no server drives (fix: release the VM, or resume the task)",
  lost: "VMs whose owner is fenced or gone and which run nowhere (fix: restart them on another node, as HA does)",
  resize: "resizes in VERIFY_RESIZE whose old copy is gone from the source (fix: confirm them: a revert is no longer possible), and resize records no task drives and no resized VM waits on (fix: the record ends in error, the source's hold is released)",
  "volume-missing": "volumes at rest whose file their pool does not have on the host that must have it (fix: the volume goes to error, with the reason)",
  "volume-orphan": "files in a pool that no volume record owns and no running task writes (fix: delete the file, only if named as Bollard names volume files; a copy's unfinished target is cancelled or deleted)",
  "volume-stuck": "volumes left in a transitional state, or held, by a task that ended or does not exist (fix: back at rest if the file is there, else error, or removed if it was being created or deleted)",
  "volume-size": "volumes whose file has another size on its host than the record says (fix: the record follows the host)",
  "vf-unrecorded": "SR-IOV VFs that a host says a VM uses and the record gives nobody (fix: recorded as held by that VM's NIC on the VF's physical network that holds no VF there, for a VM living on that node)",
  "vf-conflict": "SR-IOV VFs that the record gives one VM while the host says another uses them (no fix: move or restart one of the VMs)",
  "vf-mismatch": "VMs holding one SR-IOV VF while their host's definition uses another, free one (fix: the claim moves to the VF the host uses)",
  "vf-leaked": "SR-IOV VFs held by a VM that neither lives on that node nor uses them there (fix: release the VF)",
});

/** @typedef {{class: string, node: string | null, vm: string | null, uuid: string, volume?: string | null, pool?: string | null, file?: string | null, record: string, host: string, detail: string | null, auto?: string}} Difference */
/** @typedef {{differences: Difference[], counts: Record<string, number>, checked_vms: number, checked_nodes: number, checked_volumes?: number, silent_hosts?: string[], seconds: number, scanned_in: string, policies: Record<string, string>}} Scan */
/** @typedef {Difference & {ok: boolean, action: string}} Fix */

/**
 * The meaning of a class from its setting's help: "What the state reconciler does by
 * itself about X: report, or fix." (or "report, partial (...), or fix.", or "report only.")
 * gives X.
 * @param {string} help
 */
export function meaningOf(help) {
  const m = /about (.*): (?:report only|report, (?:partial .*, )?or fix)\.?$/s.exec(help);
  return m ? m[1] : help;
}

/**
 * The volume of a storage difference: a link to its page, or the file (in mono) when no
 * record owns it.
 * @param {Difference} d
 */
export function volumeCell(d) {
  if (d.volume) return link(volumeRoute(d.volume), d.volume, { class: "nowrap" });
  return h("span", { class: "mono" }, d.file ?? "–");
}

/**
 * What a fix row is about: the VM, or a storage difference's volume (or file).
 * @param {Difference} d
 */
function subjectCell(d) {
  return STORAGE.has(d.class) ? volumeCell(d) : vmCell(d);
}

/**
 * The summary line's "checked ..." part.
 * @param {Scan} found
 */
export function checkedText(found) {
  let text = `checked ${found.checked_vms} VMs on ${found.checked_nodes} nodes`;
  if (found.checked_volumes) text += `, ${found.checked_volumes} volumes`;
  if (found.silent_hosts?.length) text += ` (no storage answer from ${found.silent_hosts.join(", ")})`;
  return text;
}

/**
 * The VM of a difference: a link to its page, except for an orphan (the database has no
 * such VM: its page would not exist) or a VM known only by its uuid.
 * @param {Difference} d
 */
function vmCell(d) {
  if (d.vm && d.class !== "orphan") return vmLink(d.vm);
  return h("span", { class: d.vm ? null : "mono", title: d.uuid }, d.vm ?? d.uuid);
}

/**
 * @param {import("../js/ui.js").Ctx} ctx
 */
export async function render(ctx) {
  const node = /** @type {HTMLSelectElement} */ (
    h("select", { name: "node", "data-testid": "reconcile-node" }, h("option", { value: "" }, "every node"))
  );
  const vm = /** @type {HTMLInputElement} */ (
    h("input", { type: "search", name: "vm", placeholder: "VM name or uuid", autocomplete: "off", "data-testid": "reconcile-vm" })
  );
  const scanButton = h("button", { type: "submit", "data-testid": "reconcile-scan" }, "Scan now");
  const summary = h("p", { class: "muted", "data-testid": "reconcile-summary", "aria-live": "polite" });
  const outcome = h("div", { "data-testid": "reconcile-result", "aria-live": "polite" });
  const classes = h("div", { "data-testid": "reconcile-classes" });
  const form = h("form", { class: "toolbar", role: "search", "aria-label": "Scan" }, field("Node", node), field("VM", vm), scanButton);
  replace(
    ctx.view,
    h(
      "div",
      { class: "ops-page" },
      h("h1", null, "Reconcile"),
      h(
        "p",
        { class: "muted" },
        "Differences between the database and what the hosts report. The server fixes a class by itself when its setting ",
        h("code", null, "reconcile.auto.<class>"),
        " says fix; the others wait here for an operator.",
      ),
      form,
      summary,
      outcome,
      classes,
    ),
  );

  const loader = new Loader(classes);
  /** @type {Record<string, string>} */
  const meanings = { ...MEANING };
  const where = () => ({ node: node.value || null, vm: vm.value.trim() || null });

  /** @param {Scan} found */
  function draw(found) {
    const ms = (found.seconds * 1000).toFixed(1);
    const total = found.differences.length;
    summary.textContent =
      `${total === 0 ? "No differences" : `${total} ${total === 1 ? "difference" : "differences"}`}: ` +
      `${checkedText(found)} in ${ms} ms` +
      (found.scanned_in === "process" ? " (scan worker process)" : "") +
      `, at ${new Date().toLocaleTimeString()}.`;
    replace(classes, CLASSES.map((cls) => classSection(cls, found)));
  }

  /**
   * @param {string} cls
   * @param {Scan} found
   */
  function classSection(cls, found) {
    const diffs = found.differences.filter((d) => d.class === cls);
    const count = found.counts[cls] ?? diffs.length;
    const policy = found.policies[cls] ?? "report";
    const fix = REPORT_ONLY.has(cls)
      ? null
      : actionButton(ctx, "reconcile.fix", `reconcile-fix-${cls}`, `Fix ${cls}`, () => fixClass(cls, count), {
          class: "action danger",
          disabled: count === 0,
          title: count === 0 ? `No ${cls} differences to fix` : null,
        });
    const columns = STORAGE.has(cls)
      ? [
          { title: "Node", field: "node", cell: (/** @type {Difference} */ d) => nodeLink(d.node) ?? "–" },
          { title: "Volume", field: "volume", cell: (/** @type {Difference} */ d) => volumeCell(d) },
          { title: "Pool", field: "pool", cell: (/** @type {Difference} */ d) => (d.pool ? link(poolRoute(d.pool), d.pool) : "–") },
          { title: "VM", field: "vm", cell: (/** @type {Difference} */ d) => (d.vm ? vmLink(d.vm) : "–") },
          { title: "Database", field: "record", cell: (/** @type {Difference} */ d) => d.record },
          { title: "Host", field: "host", cell: (/** @type {Difference} */ d) => d.host },
          { title: "Detail", field: "detail", cell: (/** @type {Difference} */ d) => d.detail ?? "" },
          { title: "Auto", field: "auto", cell: (/** @type {Difference} */ d) => d.auto ?? policy },
        ]
      : [
          { title: "Node", field: "node", cell: (/** @type {Difference} */ d) => nodeLink(d.node) ?? "–" },
          { title: "VM", field: "vm", cell: (/** @type {Difference} */ d) => vmCell(d) },
          { title: "Database", field: "record", cell: (/** @type {Difference} */ d) => d.record },
          { title: "Host", field: "host", cell: (/** @type {Difference} */ d) => d.host },
          { title: "Detail", field: "detail", cell: (/** @type {Difference} */ d) => d.detail ?? "" },
        ];
    return h(
      "section",
      { class: "drift-class", dataset: { testid: "reconcile-class", class: cls, count } },
      h(
        "header",
        null,
        h("h2", null, cls),
        h("span", { dataset: { field: "count" } }, badge(String(count), count === 0 ? "good" : "warn")),
        h("span", { class: "muted", dataset: { field: "policy" } }, `auto: ${policy}`),
        fix ? h("span", { class: "push" }, fix) : null,
      ),
      h("p", { class: "meaning" }, meanings[cls]),
      diffs.length
        ? table(columns, diffs, (d) => ({
            dataset: { testid: "difference-row", class: d.class, vm: d.vm ?? d.uuid, node: d.node, volume: d.volume ?? d.file ?? null },
          }))
        : null,
    );
  }

  /**
   * @param {string} cls
   * @param {number} count
   */
  async function fixClass(cls, count) {
    const { node: onNode, vm: ofVm } = where();
    const scope = ofVm ? ` of VM ${ofVm}` : onNode ? ` on node ${onNode}` : "";
    const ok = await confirmDialog(
      `Fix ${count} ${cls} ${count === 1 ? "difference" : "differences"}${scope}?`,
      `${cls}: ${meanings[cls]}. Each fix is recorded as an event (reconcile.fixed or reconcile.fix_failed).`,
      `Fix ${cls}`,
    );
    if (!ok) return;
    /** @type {{fixed: Fix[], failed: Fix[], remaining: Scan}} */
    const answer = await ctx.api.post("/reconcile/fix", { classes: [cls], node: onNode, vm: ofVm });
    showFixes(cls, answer.fixed, answer.failed);
    draw(answer.remaining);
    if (answer.failed.length) {
      const first = answer.failed[0];
      const more = answer.failed.length > 1 ? ` (and ${answer.failed.length - 1} more)` : "";
      const what = STORAGE.has(cls) ? (first.volume ?? first.file) : (first.vm ?? first.uuid);
      showError(`${cls} fix failed for ${what}: ${first.action}${more}`);
    }
  }

  /**
   * @param {string} cls
   * @param {Fix[]} fixed
   * @param {Fix[]} failed
   */
  function showFixes(cls, fixed, failed) {
    const rows = [...fixed, ...failed];
    replace(
      outcome,
      h("h2", null, `Fixed ${fixed.length} ${cls}${failed.length ? `, ${failed.length} failed` : ""}`),
      rows.length
        ? table(
            [
              { title: "Result", field: "ok", cell: (f) => badge(f.ok ? "fixed" : "failed", f.ok ? "good" : "bad") },
              { title: "Node", field: "node", cell: (f) => nodeLink(f.node) ?? "–" },
              { title: "VM / volume", field: "vm", cell: (f) => subjectCell(f) },
              { title: "Action", field: "action", cell: (f) => f.action },
            ],
            rows,
            (f) => ({ dataset: { testid: "fix-row", ok: String(f.ok), class: f.class } }),
          )
        : h("p", { class: "muted" }, "Nothing to fix any more (the differences were gone)."),
    );
  }

  async function scan() {
    scanButton.setAttribute("disabled", "");
    try {
      await loader.run(
        () => ctx.api.get("/reconcile", where()),
        (found) => {
          showError(null);
          draw(found);
        },
      );
    } finally {
      scanButton.removeAttribute("disabled");
    }
  }

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    replace(outcome);
    void scan();
  });
  node.addEventListener("change", () => void scan());
  const rescan = debounce(() => void scan(), 2000);
  ctx.onEvent((e) => {
    if (e.vm || e.node || e.kind.startsWith("reconcile.") || e.kind.startsWith("volume.") || e.kind === "stream.connected") rescan();
  });

  const [nodes, settings] = await Promise.all([
    ctx.api.all("/nodes").catch((err) => {
      showError(messageOf(err));
      return [];
    }),
    ctx.api.get("/settings").catch(() => []),
  ]);
  for (const n of nodes) node.append(h("option", { value: n.name }, n.name));
  for (const s of settings) {
    const cls = s.key.startsWith("reconcile.auto.") ? s.key.slice("reconcile.auto.".length) : null;
    if (cls && typeof s.help === "string") meanings[cls] = meaningOf(s.help);
  }
  await scan();
}
