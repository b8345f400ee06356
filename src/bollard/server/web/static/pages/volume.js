// @ts-check
/** `#/volumes/NAME`: one volume: its state and the task driving it (with its progress), where
 * it is (pool, node, file), the VM it is attached to, its snapshots, and the actions its
 * state allows (volume_actions.js). Live: refreshed on its volume events and its task's, every
 * second while a task drives it, and every 10 s. */
import { ApiError, pathOf } from "../js/api.js";
import { facts, h, link, replace } from "../js/dom.js";
import { memory, progressLine, when } from "../js/format.js";
import { keepFresh, stillShown } from "./nodes_table.js";
import { snapshotButtons, volumeButtons } from "./volume_actions.js";
import { attachment, busy, concernsVolume, poolRoute, snapshotTable, stateBadge } from "./storage_parts.js";
import { nodeRoute, redraw, taskRoute } from "./vm_common.js";

/**
 * @typedef {import("./storage_parts.js").Volume} Volume
 * @typedef {import("./storage_parts.js").Snapshot} Snapshot
 */

/**
 * @param {import("../js/ui.js").Ctx} ctx
 * @param {{name: string}} params
 */
export async function render(ctx, params) {
  const hash = window.location.hash;
  const name = params.name;
  const path = pathOf("volumes", name);
  /** @type {Volume | null} */
  let volume = null;
  let gone = false;
  /** refresh the page now (after an action): keepFresh's, once the page is shown */
  let refreshNow = () => Promise.resolve();

  const title = h("h1");
  const goneNote = h("p", { "data-testid": "volume-gone", hidden: true }, `There is no volume ${name} (any more).`);
  const progress = h("p", { class: "progress-line", "data-testid": "volume-progress", "aria-live": "polite", hidden: true });
  const fault = h("p", { class: "field-error", "data-testid": "volume-fault", hidden: true });
  const actions = h("div", { class: "toolbar", role: "group", "aria-label": "Actions", "data-testid": "volume-actions" });
  const result = h("p", { class: "muted", "data-testid": "action-result", "aria-live": "polite" });
  const formBox = h("div", { "data-testid": "volume-form" });
  const factsBox = h("section", { class: "card", "data-testid": "volume-facts", "aria-labelledby": "volume-facts-h" });
  const attachBox = h("section", { class: "card", "data-testid": "volume-attachment", "aria-labelledby": "volume-att-h" });
  const snapshotsBox = h("div", { "data-testid": "volume-snapshots" });

  /** @type {import("./volume_actions.js").Page} */
  const page = {
    formBox,
    started: async (what, answer) => {
      const task = answer?.task;
      replace(
        result,
        task
          ? [`${what}: task `, link(taskRoute(task.id), task.type ?? task.id, { "data-testid": "action-task", "data-task": task.id }), " started."]
          : `${what}: done.`,
      );
      if (answer?.volume && answer.volume.name !== name) {
        result.append(" New volume: ", link(`#/volumes/${encodeURIComponent(answer.volume.name)}`, answer.volume.name, { "data-testid": "action-volume" }), ".");
      }
      await refreshNow();
    },
    deleted: () => ctx.go("#/volumes"),
  };

  async function load() {
    if (gone) return;
    /** @type {Volume} */
    let current;
    /** @type {{items: Snapshot[]}} */
    let snapshots;
    try {
      [current, snapshots] = await Promise.all([ctx.api.get(path), ctx.api.get(`${path}/snapshots`)]);
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) {
        gone = true;
        showGone();
        return;
      }
      throw err;
    }
    const task = current.task_id ? await ctx.api.get(`/tasks/${encodeURIComponent(current.task_id)}`).catch(() => null) : null;
    volume = current;
    draw(current, snapshots.items, task);
  }

  /**
   * @param {Volume} v
   * @param {Snapshot[]} snapshots
   * @param {any} task the task driving it, if any
   */
  function draw(v, snapshots, task) {
    redraw(title, JSON.stringify([v.name, v.state]), () => [
      `Volume ${v.name}`,
      h("span", { "data-testid": "volume-state" }, stateBadge(v.state)),
    ]);
    redraw(progress, JSON.stringify(task ? [task.id, task.type, task.state, progressLine(task)] : null), () =>
      task ? [link(taskRoute(task.id), task.type), `: ${progressLine(task) || task.state.replace(/_/g, " ")}`] : [],
    );
    progress.hidden = !task;
    fault.textContent = v.fault ? `Fault: ${v.fault}` : "";
    fault.hidden = !v.fault;
    // Rebuilt only when what they depend on changes (a refresh must not take the focus).
    redraw(actions, JSON.stringify([v.state, v.vm, v.pool_type, v.node, v.size_mb]), () => volumeButtons(ctx, v, page));
    actions.hidden = actions.childElementCount === 0;
    redraw(factsBox, JSON.stringify(v), () => [h("h2", { id: "volume-facts-h" }, "Volume"), volumeFacts(v)]);
    redraw(attachBox, JSON.stringify([v.vm, v.device, v.delete_with_vm, v.lock]), () => [
      h("h2", { id: "volume-att-h" }, "Attachment"),
      facts([
        ["Attached to", attachment(v), "vm"],
        ["Device", v.device ?? "–", "device"],
        ["Deleted with its VM", v.delete_with_vm ? "yes (made with it)" : "no", "delete_with_vm"],
        ["Lock", v.lock ? `held by ${v.lock.node} (epoch ${v.lock.epoch})` : "none", "lock"],
      ]),
    ]);
    redraw(snapshotsBox, JSON.stringify([snapshots, v.state]), () =>
      snapshotTable(snapshots, (s) => snapshotButtons(ctx, v, s, page)),
    );
  }

  function showGone() {
    replace(actions);
    actions.hidden = true;
    replace(formBox);
    progress.hidden = true;
    replace(title, `Volume ${name}`, h("span", { "data-testid": "volume-state" }, stateBadge("deleted")));
    goneNote.hidden = false;
  }

  await load();
  if (!stillShown(hash)) return;
  replace(
    ctx.view,
    h(
      "div",
      { class: "storage-page" },
      h("div", { class: "page-head" }, title),
      goneNote,
      progress,
      fault,
      actions,
      result,
      formBox,
      h("div", { class: "columns" }, factsBox, attachBox),
      h("section", { "aria-labelledby": "volume-snaps-h" }, h("h2", { id: "volume-snaps-h" }, "Snapshots"), snapshotsBox),
      h("p", null, link("#/volumes", "All volumes")),
    ),
  );
  refreshNow = keepFresh(ctx, load, (e) => concernsVolume(e, name, volume?.task_id ?? null), 10000);
  // A task's progress moves without events: follow it every second while one drives it.
  ctx.every(() => {
    if (volume && !gone && busy(volume)) void refreshNow();
  }, 1000);
}

/** @param {Volume} v */
function volumeFacts(v) {
  return facts([
    ["Pool", [link(poolRoute(v.pool), v.pool), h("span", { class: "muted" }, ` (${v.pool_type})`)], "pool"],
    ["Node", v.node ? link(nodeRoute(v.node), v.node) : v.pool_type === "shared" ? "any node of the pool" : "–", "node"],
    ["Size", memory(v.size_mb), "size"],
    ["Format", v.format, "format"],
    ["File", h("code", null, v.file), "file"],
    ["Task", v.task_id ? link(taskRoute(v.task_id), v.task_id) : null, "task"],
    ["Id", h("code", null, v.id), "id"],
    ["Created", when(v.created_at), "created_at"],
    ["Updated", when(v.updated_at), "updated_at"],
  ]);
}
