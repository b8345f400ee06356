// @ts-check
/** The migrate target picker of the VM page: the scheduler's candidates (from
 * `GET /vms/{name}/migrate/candidates`) as radio choices, its own choice preselected, the
 * nodes it rejects with why, and the method; submitting sends `POST /vms/{name}/migrate`.
 * Through an API server (the candidates name the VM's cell) the nodes of the other cells are
 * offered too: one of them moves the VM between cells, by shutdown only (the method is set
 * to shutdown while one is chosen; vm_move.js). */
import { ApiError, pathOf } from "../js/api.js";
import { h, replace } from "../js/dom.js";
import { trim } from "../js/format.js";
import { actionButton } from "../js/ui.js";
import { fieldErrors, labelled, select, showFieldErrors } from "./vm_common.js";
import { cellGroups, chosenRadio, crossNote, loadTargets, policyText, targetChoice } from "./vm_move.js";

/**
 * Ask for the candidates and draw the picker in `box` (replacing what was there).
 * @param {import("../js/ui.js").Ctx} ctx
 * @param {string} name the VM
 * @param {HTMLElement} box
 * @param {() => void} done called after the migration was accepted or the picker closed
 */
export async function openMigrate(ctx, name, box, done) {
  const answer = await ctx.api.get(`${pathOf("vms", name)}/migrate/candidates`);
  /** @type {{node: string, score: number | null}[]} */
  const ranking = answer.ranking;
  /** @type {{node: string, reason: string}[]} */
  const rejected = answer.rejected;
  const chosen = answer.chosen ?? null;
  /** @type {string | null} the VM's cell, through an API server */
  const ownCell = typeof answer.cell === "string" && answer.cell ? answer.cell : null;
  const cells = ownCell ? await loadTargets(ctx, ownCell, "migrate") : null;

  /**
   * @param {string} value "" for the scheduler's choice
   * @param {string} text
   * @param {string | null} node
   */
  const choice = (value, text, node) =>
    targetChoice("migrate-candidate", value, text, { node, cell: node ? ownCell : null, checked: value === "" });
  const score = (/** @type {number | null} */ s) => (s === null || s === undefined ? "" : ` (score ${trim(s)})`);
  const ranked = ranking.map((c) => choice(c.node, `${c.node}${score(c.score)}`, c.node));
  const choices = [
    choice(
      "",
      chosen ? `scheduler's choice (${chosen})` : `scheduler's choice (no node${cells ? " of its cell" : ""} can take it now)`,
      null,
    ),
    cells && ownCell ? cellGroups("migrate-candidate", ownCell, ranked, cells.groups) : ranked,
  ];
  const crossLine = h("p", { class: "muted", "data-testid": "migrate-cross-note", "aria-live": "polite", hidden: true });
  const method = select(
    "method",
    [
      ["", "the VM's own"],
      ["live", "live"],
      ["shutdown", "shutdown (stop, move, start)"],
    ],
    "",
  );
  const forceLive = h("input", { type: "checkbox", name: "force_live", id: "f-force_live" });

  const form = h(
    "form",
    { class: "card migrate-panel", "data-testid": "migrate-form", "aria-labelledby": "migrate-title", novalidate: true },
    h("h2", { id: "migrate-title" }, `Migrate ${name}`),
    h(
      "fieldset",
      { class: "choices" },
      h("legend", null, `Target (ranked by the ${answer.selector} selector)`),
      cells
        ? h(
            "p",
            { class: "muted", "data-testid": "migrate-cross-policy" },
            "A node of another cell moves the VM between cells, by a shutdown migration only. ",
            policyText("migrate", cells.lowest, ctx.me.role),
            cells.error ? ` The other cells' nodes could not be listed: ${cells.error}` : "",
          )
        : null,
      choices,
      crossLine,
    ),
    rejected.length > 0
      ? h(
          "div",
          { "data-testid": "migrate-rejected" },
          h("p", { class: "muted" }, "Nodes that cannot take it:"),
          h(
            "ul",
            null,
            rejected.map((r) => h("li", { dataset: { node: r.node } }, h("strong", null, r.node), `: ${r.reason}`)),
          ),
        )
      : null,
    labelled("method", "Method", method, "Default: the VM's migration method."),
    h("label", { class: "check", for: "f-force_live" }, forceLive, "Never fall back to a shutdown migration"),
  );

  const submit = actionButton(
    ctx,
    "vm.migrate",
    "vm-migrate-submit",
    "Migrate",
    async () => {
      const to = chosenRadio(form)?.value ?? "";
      /** @type {Record<string, any>} */
      const body = {};
      if (to) body.to = to;
      const how = /** @type {HTMLSelectElement} */ (method).value;
      if (how) body.method = how;
      if (/** @type {HTMLInputElement} */ (forceLive).checked) body.force_live = true;
      showFieldErrors(form, []);
      try {
        await ctx.api.post(`${pathOf("vms", name)}/migrate`, body);
      } catch (err) {
        if (err instanceof ApiError) showFieldErrors(form, fieldErrors(err.message));
        throw err;
      }
      replace(box);
      done();
    },
    { type: "submit", class: "action primary" },
  );
  // A node of another cell: by shutdown only (the method is set so, and set back after).
  const methodSelect = /** @type {HTMLSelectElement} */ (method);
  const notShutdown = /** @type {HTMLOptionElement[]} */ ([...method.querySelectorAll("option")]).filter((o) => o.value !== "shutdown");
  /** @type {string | null} the method chosen before a node of another cell was */
  let before = null;
  const saySide = () => {
    const radio = chosenRadio(form);
    const cross = radio?.dataset.cross === "true";
    crossLine.textContent = crossNote("migrate", radio);
    crossLine.hidden = !cross;
    if (cross && before === null) before = methodSelect.value;
    if (cross) methodSelect.value = "shutdown";
    for (const option of notShutdown) option.disabled = cross;
    if (cross) /** @type {HTMLInputElement} */ (forceLive).checked = false;
    /** @type {HTMLInputElement} */ (forceLive).disabled = cross;
    if (!cross && before !== null) {
      methodSelect.value = before;
      before = null;
    }
  };
  for (const radio of form.querySelectorAll("input[name=to]")) radio.addEventListener("change", saySide);

  // No node can take it: nothing to submit until that changes (open the picker again).
  const otherCell = cells?.groups.some((g) => g.nodes.some((n) => !n.why)) ?? false;
  if (!chosen && ranking.length === 0 && !otherCell) submit?.setAttribute("disabled", "");
  const cancel = h("button", { type: "button", "data-testid": "migrate-cancel" }, "Cancel");
  cancel.addEventListener("click", () => {
    replace(box);
    done();
  });
  form.addEventListener("submit", (e) => e.preventDefault());
  form.append(h("div", { class: "toolbar" }, submit, cancel));
  replace(box, form);
  chosenRadio(form)?.focus();
}
