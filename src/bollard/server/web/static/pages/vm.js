// @ts-check
/** `#/vms/NAME`: one VM. Its status, its cell (through an API server) and running task's
 * progress; actions (start, shut down, stop, restart, migrate with a target picker,
 * unmigrate, resize, delete, console);
 * while it is in a resize, the resize panel (confirm or revert in VERIFY_RESIZE; a move between
 * cells names its cells and, while it runs, its task's progress: vm_move.js); intent
 * (with its flavor) next to what its host reports; disks and NICs; its placement and
 * recovery settings with an edit form; its recent tasks, instance actions (each opening to
 * its events) and events. Refreshes live on the VM's events and its tasks', and every second
 * while a task of it runs. */
import { ApiError, pathOf } from "../js/api.js";
import { facts, h, link, replace } from "../js/dom.js";
import { progressLine } from "../js/format.js";
import { actionButton, badge, confirmDialog, debounce, messageOf, showError } from "../js/ui.js";
import {
  OP_HELP,
  POWER_OPS,
  deleteText,
  fieldErrors,
  redraw,
  requestOp,
  showFieldErrors,
  taskRoute,
} from "./vm_common.js";
import { RESIZE_STATUSES, migrationsRoute, statusTone } from "./resize_parts.js";
import { cellFact } from "./cell_parts.js";
import { actionsPart } from "./vm_actions.js";
import { metaControls, metaFacts } from "./vm_meta.js";
import { haControls, haFacts, haSignature } from "./ha_vm.js";
import { openMigrate } from "./vm_migrate.js";
import { openResize, resizePanel } from "./vm_resize.js";
import { moveOf, moveStep } from "./vm_move.js";
import { disksTable, eventsTable, nicsTable, sides, tasksTable } from "./vm_parts.js";

const TASKS_SHOWN = 10;
const EVENTS_SHOWN = 25;

/**
 * @param {string} id
 * @param {string} title
 * @param {...import("../js/dom.js").Child} content
 */
function section(id, title, ...content) {
  return h("section", { "aria-labelledby": `${id}-title` }, h("h2", { id: `${id}-title` }, title), content);
}

/**
 * @param {import("../js/ui.js").Ctx} ctx
 * @param {{name: string}} params
 */
export async function render(ctx, params) {
  const name = params.name;
  const path = pathOf("vms", name);
  /** @type {any} */
  let vm = null;
  /** @type {Set<string>} */
  let taskIds = new Set();
  let gone = false;
  /** @type {import("./vm_move.js").Move | null} a move between cells, if it is in one */
  let move = null;
  /** @type {Map<string, string | null>} the cells of the nodes a move names */
  const nodeCells = new Map();

  const title = h("h1");
  const head = h("div", { class: "page-head" }, title);
  const progress = h("p", { class: "progress-line", "data-testid": "vm-progress", "aria-live": "polite" });
  const cellBox = h("div", { "data-testid": "vm-cell", hidden: true }); // (through an API server)
  const actions = h("div", { class: "toolbar", role: "group", "aria-label": "Actions" });
  const migrateBox = h("div");
  const resizeBox = h("div", { "data-testid": "vm-resize" });
  const actionsList = actionsPart(ctx, name);
  const sidesBox = h("div");
  const disksBox = h("div", { "data-testid": "vm-disks" });
  const nicsBox = h("div", { "data-testid": "vm-nics" });
  const metaBox = h("div", { class: "card", "data-testid": "vm-meta" });
  const metaEditBox = h("div");
  const tasksBox = h("div", { "data-testid": "vm-tasks" });
  const eventsBox = h("div", { "data-testid": "vm-events" });
  const metaEdit = ctx.can("vm.update")
    ? h("button", { type: "button", dataset: { action: "vm-meta-edit" }, "aria-expanded": "false" }, "Edit")
    : null;

  replace(
    ctx.view,
    h(
      "div",
      { class: "vm-page" },
      head,
      cellBox,
      progress,
      actions,
      migrateBox,
      resizeBox,
      sidesBox,
      h("div", { class: "columns" }, section("vm-disks", "Disks", disksBox), section("vm-nics", "Network interfaces", nicsBox)),
      h(
        "section",
        { "aria-labelledby": "vm-meta-title" },
        h("div", { class: "page-head" }, h("h2", { id: "vm-meta-title" }, "Placement, recovery and HA"), metaEdit),
        metaEditBox,
        metaBox,
      ),
      section("vm-tasks", "Tasks", tasksBox, h("p", null, link(`#/tasks`, "All tasks"))),
      section(
        "vm-actions",
        "Actions",
        h("p", { class: "muted" }, "What was asked of this VM, by whom, and how it ended; open one to see its events."),
        actionsList.root,
        h("p", null, link(migrationsRoute(name), "Its migrations and resizes")),
      ),
      section("vm-events", "Events", eventsBox, h("p", null, link(`#/events`, "All events"))),
    ),
  );

  async function load() {
    const [current, tasks, events] = await Promise.all([
      ctx.api.get(path),
      ctx.api.get("/tasks", { vm: name, order: "newest", limit: TASKS_SHOWN }),
      ctx.api.get("/events", { vm: name, limit: EVENTS_SHOWN }),
      actionsList.load(), // (says its own failure in its section)
    ]);
    const [task, moved] = await Promise.all([
      current.task_id ? ctx.api.get(`/tasks/${encodeURIComponent(current.task_id)}`) : null,
      moveOf(ctx, current, nodeCells),
    ]);
    vm = current;
    move = moved;
    taskIds = new Set(tasks.items.map((/** @type {any} */ t) => String(t.id)));
    draw(tasks.items, [...events.items].reverse(), task);
  }

  /**
   * @param {any[]} tasks
   * @param {any[]} events
   * @param {any} running the VM's running task, if any
   */
  function draw(tasks, events, running) {
    // A move between cells: its task (the API server's) is what the VM does.
    const task = move?.task ?? running;
    const line = (/** @type {any} */ t) => (t === move?.task ? moveStep(t) : progressLine(t) || t.state.replace(/_/g, " "));
    const now = Date.now();
    redraw(title, JSON.stringify([vm.name, vm.status]), () => [
      vm.name,
      h("span", { "data-testid": "vm-status" }, badge(vm.status, statusTone(vm.status))),
    ]);
    redraw(progress, JSON.stringify(task ? [task.id, task.type, line(task), task.state] : null), () =>
      task ? [link(taskRoute(task.id), task.type), `: ${line(task)}`] : [],
    );
    progress.hidden = !task;
    redraw(cellBox, JSON.stringify(vm.cell ?? null), () => facts(cellFact(vm)));
    cellBox.hidden = !vm.cell;
    redraw(actions, JSON.stringify([vm.previous_node, vm.node, RESIZE_STATUSES.has(vm.status)]), drawActions);
    redraw(resizeBox, JSON.stringify([vm.status, vm.task_state, vm.task_id, vm.resize, move]), () => resizePanel(ctx, vm, refresh, move));
    redraw(sidesBox, JSON.stringify([vm, Math.round(now / 5000)]), () => sides(vm, now));
    redraw(disksBox, JSON.stringify(vm.disks), () => disksTable(vm.disks));
    redraw(nicsBox, JSON.stringify(vm.nics), () => nicsTable(vm.nics));
    redraw(metaBox, JSON.stringify([vm.migration_method, vm.node_limit, vm.node_selector, vm.ha, vm.ha_priority, vm.on_lost, vm.autostart]) + haSignature(vm), () => [
      metaFacts(vm),
      h("div", { "data-testid": "vm-ha" }, haFacts(vm)),
    ]);
    redraw(tasksBox, JSON.stringify([tasks, Math.round(now / 10000)]), () => tasksTable(tasks, now));
    const types = new Map(tasks.map((t) => [String(t.id), String(t.type)]));
    redraw(eventsBox, JSON.stringify([events, [...types]]), () => eventsTable(events, types));
  }

  function drawActions() {
    const consoleLink = ctx.can("vm.console")
      ? h("a", { class: "button", href: `#/vms/${encodeURIComponent(name)}/console`, "data-testid": "vm-console-link" }, "Console")
      : null;
    // While a resize runs or waits for confirm or revert, the server takes nothing else: the
    // resize panel has what can be done.
    if (RESIZE_STATUSES.has(vm.status)) return [consoleLink];
    const buttons = POWER_OPS.map((op) =>
      actionButton(
        ctx,
        op.permission,
        `vm-${op.op}`,
        op.label,
        async () => {
          if (op.op === "delete") {
            if (!(await confirmDialog(`Delete ${name}?`, deleteText([name]), "Delete"))) return;
            await requestOp(ctx.api, name, op.op);
            ctx.go("#/vms");
            return;
          }
          await requestOp(ctx.api, name, op.op);
          refresh();
        },
        { title: OP_HELP[op.op], class: op.op === "delete" ? "action danger" : "action" },
      ),
    );
    const remove = buttons.pop();
    const migrate = actionButton(ctx, "vm.migrate", "vm-migrate", "Migrate…", async () => {
      await openMigrate(ctx, name, migrateBox, () => {
        const again = actions.querySelector("[data-action=vm-migrate]");
        if (again instanceof HTMLElement) again.focus();
        refresh();
      });
    });
    const unmigrate = vm.previous_node
      ? actionButton(
          ctx,
          "vm.migrate",
          "vm-unmigrate",
          `Unmigrate (back to ${vm.previous_node})`,
          async () => {
            await ctx.api.post(`${path}/unmigrate`, {});
            refresh();
          },
          { title: "Send it back to the node it was migrated from." },
        )
      : null;
    const resize = actionButton(
      ctx,
      "vm.resize",
      "vm-resize",
      "Resize…",
      async () => {
        await openResize(ctx, vm, migrateBox, () => {
          const again = actions.querySelector("[data-action=vm-resize]");
          if (again instanceof HTMLElement) again.focus();
          refresh();
        });
      },
      { title: "Give it another flavor (size): it moves as a migration does, then waits for confirm or revert." },
    );
    return [...buttons, migrate, unmigrate, resize, consoleLink, remove];
  }

  if (metaEdit) {
    metaEdit.addEventListener("click", () => {
      if (metaEditBox.firstChild) {
        closeMeta();
        return;
      }
      void openMeta();
    });
  }

  function closeMeta() {
    replace(metaEditBox);
    metaBox.hidden = false;
    metaEdit?.setAttribute("aria-expanded", "false");
    metaEdit?.focus();
  }

  async function openMeta() {
    let nodes, groups;
    try {
      [nodes, groups] = await Promise.all([ctx.api.all("/nodes"), ctx.api.all("/ha/groups")]);
    } catch (err) {
      showError(messageOf(err));
      return;
    }
    const controls = metaControls(nodes.map((/** @type {any} */ n) => String(n.name)), vm);
    const ha = haControls(groups.map((/** @type {any} */ g) => String(g.name)), vm);
    const note = h("span", { class: "muted", "aria-live": "polite", "data-testid": "meta-note" });
    const form = h("form", { class: "card meta-edit vm-meta", novalidate: true, "data-testid": "meta-form" }, controls.root, ha.root);
    const save = actionButton(
      ctx,
      "vm.update",
      "vm-meta-save",
      "Save",
      async () => {
        const body = { ...controls.changes(), ...ha.changes() };
        showFieldErrors(form, []);
        if (Object.keys(body).length === 0) {
          note.textContent = "Nothing changed.";
          return;
        }
        note.textContent = "";
        try {
          vm = await ctx.api.patch(path, body);
        } catch (err) {
          if (err instanceof ApiError) showFieldErrors(form, fieldErrors(err.message));
          throw err;
        }
        closeMeta();
        refresh();
      },
      { type: "submit", class: "action primary" },
    );
    const cancel = h("button", { type: "button" }, "Cancel");
    cancel.addEventListener("click", closeMeta);
    form.addEventListener("submit", (e) => e.preventDefault());
    form.append(h("div", { class: "toolbar" }, save, cancel, note));
    replace(metaEditBox, form);
    metaBox.hidden = true;
    metaEdit?.setAttribute("aria-expanded", "true");
    const first = form.querySelector("select, input");
    if (first instanceof HTMLElement) first.focus();
  }

  async function reload() {
    if (gone) return;
    try {
      await load();
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) {
        gone = true;
        if (metaEditBox.firstChild) closeMeta();
        if (metaEdit) metaEdit.hidden = true;
        replace(actions);
        replace(migrateBox);
        replace(resizeBox);
        progress.hidden = true;
        replace(title, name, h("span", { "data-testid": "vm-status" }, badge("DELETED", statusTone("DELETED"))));
        head.after(h("p", { "data-testid": "vm-gone" }, `VM ${name} no longer exists (deleted).`));
        return;
      }
      showError(messageOf(err));
    }
  }

  const refresh = debounce(() => void reload(), 300);
  await load();
  ctx.onEvent((e) => {
    if (e.kind === "stream.connected" || e.vm === name || (e.task_id !== null && taskIds.has(e.task_id))) refresh();
    // A disk's volume changing state (attaching, resizing, ...): its row shows the state.
    else if (e.kind.startsWith("volume.") && vm?.disks?.some((/** @type {any} */ d) => d.volume && d.volume === e.data?.volume)) refresh();
  });
  // A running task's progress moves without events; "last reported" ages.
  ctx.every(() => {
    if (vm?.task_id || move?.task || (move && vm?.status !== "VERIFY_RESIZE")) refresh();
  }, 1000);
  ctx.every(refresh, 10000);
}
