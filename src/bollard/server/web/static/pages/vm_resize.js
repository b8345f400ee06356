// @ts-check
/** Resizing a VM from its page: the Resize form (a flavor from `GET /flavors`, and a target:
 * the scheduler's choice, one of the migrate picker's candidates, or a node typed in; through
 * an API server the nodes of the other cells too, one of which moves the VM between cells:
 * vm_move.js) that sends `POST /vms/{name}/resize`; and the resize panel: while the VM waits
 * in VERIFY_RESIZE, what confirming and reverting will do, with Confirm and Revert
 * (`POST .../resize/confirm|revert`); while it is in RESIZE or REVERT_RESIZE, what it is
 * doing and its task's state. The task is followed like a migration's: the page's progress
 * line and the task panel show it. */
import { ApiError, pathOf } from "../js/api.js";
import { h, link, replace } from "../js/dom.js";
import { memory, trim, when } from "../js/format.js";
import { actionButton, messageOf } from "../js/ui.js";
import { flavorLabel, flavorOption } from "./flavor_parts.js";
import { decidable, resizeLine, undecidableWhy, verifyText } from "./resize_parts.js";
import { fieldErrors, labelled, select, showFieldErrors, taskRoute } from "./vm_common.js";
import {
  cellGroups,
  chosenRadio,
  crossCell,
  crossCellText,
  crossNote,
  loadTargets,
  moveProgress,
  movingText,
  policyText,
  rememberEndTask,
  targetChoice,
} from "./vm_move.js";

/**
 * @typedef {import("../js/ui.js").Ctx} Ctx
 * @typedef {import("./flavor_parts.js").Flavor} Flavor
 */

/**
 * Read the flavors and the migrate candidates, and draw the resize form in `box`.
 * @param {Ctx} ctx
 * @param {any} vm the VM (VmOut)
 * @param {HTMLElement} box
 * @param {() => void} done called after the resize was accepted or the form closed
 */
export async function openResize(ctx, vm, box, done) {
  const name = vm.name;
  /** @type {Flavor[]} */
  const flavors = await ctx.api.all("/flavors");
  /** @type {{node: string, score: number | null}[]} */
  let ranking = [];
  /** @type {string | null} */
  let chosen = null;
  /** @type {string | null} */
  let candidatesError = null;
  /** @type {string | null} the VM's cell, through an API server */
  let ownCell = typeof vm.cell === "string" && vm.cell ? vm.cell : null;
  try {
    const answer = await ctx.api.get(`${pathOf("vms", name)}/migrate/candidates`);
    ranking = answer.ranking;
    chosen = answer.chosen ?? null;
    if (typeof answer.cell === "string" && answer.cell) ownCell = answer.cell;
  } catch (err) {
    candidatesError = messageOf(err);
  }
  const cells = ownCell ? await loadTargets(ctx, ownCell, "resize") : null;

  const current = vm.flavor?.name ?? null;
  const first = flavors.find((f) => f.name !== current)?.name ?? "";
  const flavor = select(
    "flavor",
    flavors.map((f) => /** @type {[string, string]} */ ([f.name, `${flavorOption(f)}${f.name === current ? " (current)" : ""}`])),
    first,
  );
  flavor.dataset.testid = "resize-flavor";

  /**
   * @param {string} value "" for the scheduler's choice, "*" for the node typed in
   * @param {import("../js/dom.js").Child | import("../js/dom.js").Child[]} text
   * @param {string | null} node
   */
  const choice = (value, text, node) =>
    targetChoice("resize-candidate", value, text, { node, cell: node ? ownCell : null, checked: value === "" });
  const score = (/** @type {number | null} */ s) => (s === null || s === undefined ? "" : ` (score ${trim(s)})`);
  const other = h("input", {
    type: "text",
    name: "to_other",
    autocomplete: "off",
    spellcheck: "false",
    "aria-label": "Another node",
    placeholder: "node name",
    "data-testid": "resize-to-other",
  });
  const ranked = ranking.map((c) => choice(c.node, `${c.node}${score(c.score)}`, c.node));
  const choices = [
    choice("", chosen ? `scheduler's choice (now: ${chosen})` : "scheduler's choice", null),
    cells && ownCell ? cellGroups("resize-candidate", ownCell, ranked, cells.groups) : ranked,
    choice("*", ["another node: ", other], null),
  ];
  const crossLine = h("p", { class: "muted", "data-testid": "resize-cross-note", "aria-live": "polite", hidden: true });
  // A node of another cell: say what that means.
  const saySide = () => {
    crossLine.textContent = crossNote("resize", chosenRadio(form));
    crossLine.hidden = !crossLine.textContent;
  };
  // Typing a node picks "another node".
  other.addEventListener("input", () => {
    const radio = /** @type {HTMLInputElement | null} */ (box.querySelector("input[name=to][value='*']"));
    if (radio) radio.checked = true;
    saySide();
  });

  const form = h(
    "form",
    { class: "card migrate-panel", "data-testid": "resize-form", "aria-labelledby": "resize-title", novalidate: true },
    h("h2", { id: "resize-title" }, `Resize ${name}`),
    h("p", { class: "muted" }, `Now: ${flavorLabel(vm.flavor)} (${vm.vcpus} vCPU, ${memory(vm.memory_mb)}) on ${vm.node ?? "no node"}.`),
    flavors.length === 0
      ? h("p", { "data-testid": "resize-no-flavor" }, "There is no flavor to resize to: an admin makes them on ", link("#/flavors", "Flavors"), ".")
      : labelled("flavor", "New flavor", flavor),
    h(
      "fieldset",
      { class: "choices" },
      h("legend", null, "Where"),
      h(
        "p",
        { class: "muted" },
        "The nodes a migration could go to now, best first (at its present size: the resize checks the new one). " +
          "Its own node is taken only where the setting resize.allow_same_node allows it.",
      ),
      candidatesError ? h("p", { class: "muted", "data-testid": "resize-candidates-error" }, `No candidates: ${candidatesError}`) : null,
      cells
        ? h(
            "p",
            { class: "muted", "data-testid": "resize-cross-policy" },
            "A node of another cell moves the VM between cells; without a node chosen the scheduler " +
              "keeps it in its cell unless its cell has no room. ",
            policyText("resize", cells.lowest, ctx.me.role),
            cells.error ? ` The other cells' nodes could not be listed: ${cells.error}` : "",
          )
        : null,
      choices,
      crossLine,
      h("p", { class: "field-error", id: "error-to", dataset: { errorFor: "to" }, hidden: true }),
    ),
    h(
      "p",
      { class: "muted" },
      "The VM moves to the new size as a migration does; then it waits in VERIFY_RESIZE until " +
        "you confirm (the old copy is deleted) or revert (it goes back where it was, at its old size).",
    ),
  );

  for (const radio of form.querySelectorAll("input[name=to]")) radio.addEventListener("change", saySide);

  const submit = actionButton(
    ctx,
    "vm.resize",
    "vm-resize-submit",
    "Resize",
    async () => {
      const picked = chosenRadio(form)?.value ?? "";
      const typed = /** @type {HTMLInputElement} */ (other).value.trim();
      const to = picked === "*" ? typed || null : picked || null;
      const body = { flavor: /** @type {HTMLSelectElement} */ (flavor).value, to };
      showFieldErrors(form, []);
      try {
        await ctx.api.post(`${pathOf("vms", name)}/resize`, body);
      } catch (err) {
        if (err instanceof ApiError) showFieldErrors(form, fieldErrors(err.message));
        throw err;
      }
      replace(box);
      done();
    },
    { type: "submit", class: "action primary" },
  );
  if (flavors.length === 0) submit?.setAttribute("disabled", "");
  const cancel = h("button", { type: "button", "data-testid": "resize-cancel" }, "Cancel");
  cancel.addEventListener("click", () => {
    replace(box);
    done();
  });
  form.addEventListener("submit", (e) => e.preventDefault());
  form.addEventListener("keydown", (e) => {
    if (e.key === "Escape") cancel.click();
  });
  form.append(h("div", { class: "toolbar" }, submit, cancel));
  replace(box, form);
  (flavors.length > 0 ? flavor : cancel).focus();
}

/**
 * The resize panel of a VM in a resize, or [] for a VM in none: in VERIFY_RESIZE what
 * confirm and revert do, with their buttons (vm.resize); in RESIZE or REVERT_RESIZE what
 * it is doing and its task state. A move between cells (`resize.cross_cell`) names its cells,
 * and while it runs, its task's step and progress (`move`, vm_move.js).
 * @param {Ctx} ctx
 * @param {any} vm
 * @param {() => void} refresh
 * @param {import("./vm_move.js").Move | null} [move]
 */
export function resizePanel(ctx, vm, refresh, move = null) {
  const cross = crossCell(vm);
  const path = pathOf("vms", vm.name);
  if (vm.status === "VERIFY_RESIZE") {
    const resize = vm.resize;
    const text = resize
      ? verifyText(resize)
      : "Resized: confirm (deletes the old copy) or revert (back to its old node and size)";
    const confirm = actionButton(
      ctx,
      "vm.resize",
      "vm-resize-confirm",
      "Confirm resize",
      async () => {
        const answer = await ctx.api.post(`${path}/resize/confirm`);
        if (cross) rememberEndTask(vm.name, answer?.task);
        refresh();
      },
      { class: "action primary", title: "Keep the new size; the old copy on the source is deleted." },
    );
    const revert = actionButton(
      ctx,
      "vm.resize",
      "vm-resize-revert",
      "Revert resize",
      async () => {
        const answer = await ctx.api.post(`${path}/resize/revert`);
        if (cross) rememberEndTask(vm.name, answer?.task);
        refresh();
      },
      { title: "Go back to the source node at the old size; the new copy is deleted." },
    );
    // Not before the resize's task has ended (the server refuses both until then).
    const why = undecidableWhy(vm);
    for (const button of [confirm, revert]) {
      if (button && !decidable(vm)) button.setAttribute("disabled", "");
    }
    return h(
      "section",
      { class: "card migrate-panel", "data-testid": "resize-verify", "aria-labelledby": "resize-verify-h", role: "region" },
      h("h2", { id: "resize-verify-h" }, cross ? "Move between cells waiting for confirmation" : "Resize waiting for confirmation"),
      h("p", { "data-testid": "resize-verify-text" }, text),
      cross && resize
        ? h(
            "p",
            { "data-testid": "resize-cross-cell", dataset: { source: move?.source ?? null, target: move?.target ?? null } },
            crossCellText(resize, move),
          )
        : null,
      resize?.finished_at ? h("p", { class: "muted" }, `Resized at ${when(resize.finished_at)}.`) : null,
      why ? h("p", { class: "muted", "data-testid": "resize-verify-wait" }, why) : null,
      cross && move?.task ? moveProgress(move.task) : null,
      confirm || revert ? h("div", { class: "toolbar" }, confirm, revert) : null,
    );
  }
  const line = resizeLine(vm);
  if (!line) return [];
  return h(
    "section",
    { class: "card migrate-panel", "data-testid": "resize-state", "aria-labelledby": "resize-state-h" },
    h(
      "h2",
      { id: "resize-state-h" },
      cross
        ? vm.status === "REVERT_RESIZE" ? "Moving back between cells" : "Moving between cells"
        : vm.status === "REVERT_RESIZE" ? "Reverting a resize" : "Resizing",
    ),
    h("p", { "data-testid": "resize-state-text" }, line, vm.task_id ? [" (", link(taskRoute(vm.task_id), "task"), ")"] : null),
    cross ? h("p", { "data-testid": "resize-cross-cell", dataset: { source: move?.source ?? null, target: move?.target ?? null } }, `${movingText(vm, move)}.`) : null,
    cross && move?.task ? moveProgress(move.task) : null,
  );
}
