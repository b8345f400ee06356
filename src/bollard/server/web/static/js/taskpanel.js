// @ts-check
/** The live task panel at the bottom of every page (like Proxmox's task log): running tasks
 * with what they are about (a VM, a volume or a node), their step and progress, then the
 * most recent finished ones with their outcome. Refreshed on every event that names a task,
 * and every second while a task runs (a migration's or a volume copy's progress is in its
 * task, not in an event). */
import { h, link, replace } from "./dom.js";
import { ago, outcomeLine, progressLine, tone } from "./format.js";
import { actionButton, badge, debounce } from "./ui.js";

const RECENT = 8;

/**
 * @typedef {object} Subject what a task is about, as the console links it
 * @property {"vm" | "volume" | "node"} kind
 * @property {string} name
 * @property {string} route the page that shows it
 */

/**
 * What a task is about: its VM; else the volume its params name (the volume tasks:
 * volume_create, volume_delete, volume_grow, volume_attach, volume_detach, volume_copy,
 * volume_migrate, snapshot_create, snapshot_delete, snapshot_revert; those of a VM's disk
 * name the VM); else its node (flush, fence, ...); null for none of them. Pure (tested
 * with `node --test`).
 * @param {{vm?: string | null, node?: string | null, params?: Record<string, any> | null}} task
 * @returns {Subject | null}
 */
export function taskSubject(task) {
  if (task.vm) return { kind: "vm", name: task.vm, route: `#/vms/${encodeURIComponent(task.vm)}` };
  const volume = taskVolume(task);
  if (volume) return { kind: "volume", name: volume, route: `#/volumes/${encodeURIComponent(volume)}` };
  if (task.node) return { kind: "node", name: task.node, route: `#/nodes/${encodeURIComponent(task.node)}` };
  return null;
}

/**
 * The name of the volume a task's params name (`params.volume`, server/tasks/params.py
 * VolumeParams), or null.
 * @param {{params?: Record<string, any> | null}} task
 */
export function taskVolume(task) {
  const volume = task.params?.volume;
  return typeof volume === "string" && volume !== "" ? volume : null;
}

const KIND_TITLES = { vm: "VM", volume: "Volume", node: "Node" };

/**
 * A link to the page of what a task is about ("" for nothing), titled with its kind ("Volume
 * data1"): a VM and a volume may share a name.
 * @param {any} task
 * @param {Record<string, any>} [attrs]
 */
export function subjectLink(task, attrs = {}) {
  const subject = taskSubject(task);
  if (subject === null) return "";
  return link(subject.route, subject.name, { title: `${KIND_TITLES[subject.kind]} ${subject.name}`, ...attrs });
}

export class TaskPanel {
  /**
   * @param {HTMLElement} root
   * @param {import("./ui.js").Ctx} ctx
   */
  constructor(root, ctx) {
    this.root = root;
    this.ctx = ctx;
    /** @type {ReturnType<typeof setInterval> | null} */
    this.timer = null;
    this.collapsed = sessionStorage.getItem("bollard.tasks.collapsed") === "1";
    this.refresh = debounce(() => void this.load(), 250);
  }

  start() {
    this.root.hidden = false;
    this.ctx.onEvent((e) => {
      if (e.task_id || e.kind === "stream.connected") this.refresh();
    });
    void this.load();
  }

  async load() {
    /** @type {any[]} */
    let running;
    /** @type {any[]} */
    let recent;
    try {
      const [active, all] = await Promise.all([
        this.ctx.api.get("/tasks", { active: true, order: "newest", limit: 50 }),
        this.ctx.api.get("/tasks", { order: "newest", limit: RECENT + 10 }),
      ]);
      running = active.items;
      const ids = new Set(running.map((t) => t.id));
      recent = all.items.filter((/** @type {any} */ t) => !ids.has(t.id));
    } catch (err) {
      replace(this.root, h("p", { class: "muted" }, `tasks: ${err instanceof Error ? err.message : err}`));
      return;
    }
    this.draw(running, recent.slice(0, RECENT));
    // While something runs, its progress moves without events: look again in a second.
    const busy = running.length > 0;
    if (busy && this.timer === null) {
      this.timer = setInterval(() => void this.load(), 1000);
    } else if (!busy && this.timer !== null) {
      clearInterval(this.timer);
      this.timer = null;
    }
  }

  /**
   * @param {any[]} running
   * @param {any[]} recent
   */
  draw(running, recent) {
    const now = Date.now();
    const toggle = h(
      "button",
      { type: "button", class: "link", "aria-expanded": String(!this.collapsed), "data-testid": "task-panel-toggle" },
      this.collapsed ? "Show" : "Hide",
    );
    toggle.addEventListener("click", () => {
      this.collapsed = !this.collapsed;
      sessionStorage.setItem("bollard.tasks.collapsed", this.collapsed ? "1" : "0");
      this.draw(running, recent);
    });
    /** @param {any} t */
    const row = (t) =>
      h(
        "tr",
        { dataset: { testid: "task-row", task: t.id, state: t.state } },
        h("td", { dataset: { field: "state" } }, badge(t.state, tone(t.state))),
        h("td", { dataset: { field: "type" } }, link(`#/tasks/${encodeURIComponent(t.id)}`, t.type)),
        h("td", { dataset: { field: "subject", kind: taskSubject(t)?.kind } }, subjectLink(t)),
        h(
          "td",
          { dataset: { field: t.state === "running" || t.state === "pending" ? "progress" : "outcome" }, class: "grow" },
          t.state === "running" || t.state === "pending" ? progressLine(t) || t.state : outcomeLine(t),
        ),
        h("td", { dataset: { field: "actor" }, class: "muted" }, t.actor ?? ""),
        h("td", { class: "muted", title: t.created_at }, ago(t.created_at, now)),
        h(
          "td",
          null,
          t.state === "running" || t.state === "pending"
            ? actionButton(this.ctx, "task.cancel", "task-cancel", "Cancel", () =>
                this.ctx.api.post(`/tasks/${encodeURIComponent(t.id)}/cancel`),
              )
            : null,
        ),
      );
    replace(
      this.root,
      h(
        "div",
        { class: "panel-head" },
        h("h2", null, "Tasks"),
        h("span", { class: "muted", "data-testid": "task-panel-count" }, `${running.length} running`),
        toggle,
      ),
      this.collapsed
        ? null
        : h(
            "div",
            { class: "table-wrap" },
            h("table", { class: "compact" }, h("tbody", null, [...running, ...recent].map(row))),
          ),
    );
  }
}
