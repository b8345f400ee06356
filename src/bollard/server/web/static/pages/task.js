// @ts-check
/** A task (`#/tasks/ID`): what it is (type, VM, volume, node, state, who asked, times, error),
 * its progress while it runs, the scheduler's placement, its steps (with their commands,
 * retries, errors and undo), params and result, and its events. Cancel while it runs.
 * Live: reloaded on every event of this task, and every second until it has ended. */
import { pathOf } from "../js/api.js";
import { facts, h, link, replace } from "../js/dom.js";
import { duration, outcomeLine, progressLine, taskFinished, tone } from "../js/format.js";
import { subjectLink, taskVolume } from "../js/taskpanel.js";
import { actionButton, badge, bar, confirmDialog, debounce, messageOf, showError } from "../js/ui.js";
import { eventsTable } from "./events_parts.js";
import { Loader, jsonBlock, nodeLink, time, vmLink } from "./ops_parts.js";
import { placementSection, stepsTable } from "./task_parts.js";

/**
 * @param {import("../js/ui.js").Ctx} ctx
 * @param {{id: string}} params
 */
export async function render(ctx, params) {
  const id = params.id;
  const root = h("div", { class: "ops-page", "data-testid": "task-page", dataset: { task: id } });
  replace(ctx.view, root);
  const loader = new Loader(root);
  /** @type {any} */
  let task = null;

  async function load() {
    await loader.run(
      () =>
        Promise.all([
          ctx.api.get(pathOf("tasks", id)),
          ctx.api.get("/events", { task: id, limit: 200 }),
        ]),
      ([t, events]) => {
        task = t;
        draw(t, events.items.slice().reverse(), events.more);
      },
      (err) => {
        showError(messageOf(err));
        if (!task) replace(root, h("h1", null, "Task ", h("span", { class: "mono" }, id)));
      },
    );
  }

  /**
   * @param {any} t
   * @param {any[]} events newest first
   * @param {boolean} moreEvents
   */
  function draw(t, events, moreEvents) {
    const running = !taskFinished(t);
    const cancel =
      (t.state === "pending" || t.state === "running") && !t.cancel_requested
        ? actionButton(ctx, "task.cancel", "task-cancel", "Cancel task", async () => {
            const volume = taskVolume(t);
            const what = `${t.type}${t.vm ? ` of ${t.vm}` : volume ? ` of volume ${volume}` : ""}`;
            const subject = t.vm ? "the VM" : volume ? "the volume" : "what it acts on";
            const ok = await confirmDialog(
              `Cancel the ${what}?`,
              `The task stops before its next step (a migration or a copy in flight is aborted on ` +
                `its host) and rolls back what it had done; ${subject} is left as it was before the task.`,
              "Cancel task",
            );
            if (!ok) return;
            await ctx.api.post(`${pathOf("tasks", id)}/cancel`);
            await load();
          }, { class: "action danger" })
        : null;
    const result = { ...(t.result ?? {}) };
    const placement = result.placement;
    delete result.placement;
    const steps = t.steps ?? [];
    replace(
      root,
      h(
        "h1",
        null,
        `Task ${t.type}`,
        heading(t),
        " ",
        h("span", { "data-testid": "task-state" }, badge(t.state, tone(t.state))),
      ),
      cancel ? h("div", { class: "toolbar" }, cancel) : null,
      running ? progress(t) : h("p", { "data-testid": "task-outcome", class: t.error ? "bad-text" : null }, outcomeLine(t)),
      h(
        "div",
        { class: "columns" },
        h(
          "section",
          { "aria-label": "Facts" },
          facts([
            ["Id", h("span", { class: "mono" }, t.id), "id"],
            ["Type", t.type, "type"],
            ["VM", vmLink(t.vm) ?? (t.vm_uuid ? h("span", { class: "mono" }, t.vm_uuid) : "–"), "vm"],
            ["Volume", volumeLink(taskVolume(t)), "volume"],
            ["Node", nodeLink(t.node) ?? "–", "node"],
            ["State", badge(t.state, tone(t.state)), "state"],
            ["Actor", t.actor ?? "–", "actor"],
            ["Server", t.server ? h("span", { class: "mono" }, t.server) : "–", "server"],
            ["Created", time(t.created_at), "created"],
            ["Updated", time(t.updated_at), "updated"],
            ["Finished", t.finished_at ? time(t.finished_at) : "–", "finished"],
            ["Took", tookText(t), "took"],
            ["Error", t.error ? h("span", { class: "bad-text" }, t.error) : null, "error"],
            ["Cancel", t.cancel_requested ? "requested" : null, "cancel"],
          ]),
        ),
        placement ? placementSection(placement) : null,
      ),
      h("h2", null, `Steps (${steps.length})`),
      stepsTable(steps),
      h(
        "div",
        { class: "columns" },
        h("section", null, h("h2", null, "Params"), jsonBlock(t.params, { "data-testid": "task-params" })),
        h("section", null, h("h2", null, "Result"), jsonBlock(result, { "data-testid": "task-result" })),
      ),
      h("h2", null, "Events"),
      eventsTable(events, "No event of this task."),
      moreEvents ? h("p", { class: "muted" }, `The ${events.length} newest events of this task.`) : null,
    );
  }

  const refresh = debounce(() => void load(), 300);
  ctx.onEvent((e) => {
    if (e.task_id === id || e.kind === "stream.connected") refresh();
  });
  // Progress moves without events: look every second until the task has ended.
  ctx.every(() => {
    if (task && !taskFinished(task)) refresh();
  }, 1000);
  showError(null);
  await load();
}

/**
 * What the heading says the task is about: " of web1", " of volume data1", " on node1".
 * @param {any} t
 */
function heading(t) {
  const subject = subjectLink(t, { "data-testid": "task-subject" });
  if (t.vm) return [" of ", subject];
  if (taskVolume(t)) return [" of volume ", subject];
  return t.node ? [" on ", subject] : null;
}

/**
 * A link to a volume's page (null for none: the fact is left out).
 * @param {string | null} name
 */
function volumeLink(name) {
  return name ? link(`#/volumes/${encodeURIComponent(name)}`, name, { class: "nowrap" }) : null;
}

/**
 * A running task's progress: its line, and a bar when it says how far it is.
 * @param {any} t
 */
function progress(t) {
  const fraction = t.result?.progress?.fraction;
  const line = progressLine(t) || t.state.replace(/_/g, " ");
  return h(
    "div",
    { "data-testid": "task-progress", class: "task-progress" },
    typeof fraction === "number" ? bar(fraction, line, "Progress") : h("p", null, line),
  );
}

/** @param {any} t */
function tookText(t) {
  const start = Date.parse(t.created_at);
  const end = t.finished_at ? Date.parse(t.finished_at) : Date.now();
  if (Number.isNaN(start) || Number.isNaN(end)) return "–";
  return `${duration(Math.max(0, (end - start) / 1000))}${t.finished_at ? "" : " so far"}`;
}
