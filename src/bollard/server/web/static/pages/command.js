// @ts-check
/** A command (`#/commands/ID`): its server state and agent journal state side by side, what
 * it is (type, node, VM, epoch, task), its arguments, the agent's answer, the error, times,
 * attempts, and every transition it went through. Live until it reaches a final state. */
import { facts, h, replace, table } from "../js/dom.js";
import { tone } from "../js/format.js";
import { badge, debounce, messageOf, showError } from "../js/ui.js";
import { TERMINAL, errorText, outcome, statePair } from "./commands_parts.js";
import { Loader, jsonBlock, nodeLink, taskLink, time, vmLink } from "./ops_parts.js";

/** @typedef {import("./commands_parts.js").Command} Command */

/**
 * @param {import("../js/ui.js").Ctx} ctx
 * @param {{id: string}} params
 */
export async function render(ctx, params) {
  const id = params.id;
  const root = h("div", { class: "ops-page", "data-testid": "command-page", dataset: { command: id } });
  replace(ctx.view, root);
  const loader = new Loader(root);
  /** @type {Command | null} */
  let command = null;
  /** @type {string | null | undefined} the VM's name, from its task (looked up once) */
  let vmName;

  async function load() {
    await loader.run(
      async () => {
        /** @type {Command} */
        const c = await ctx.api.get(`/commands/${encodeURIComponent(id)}`);
        if (vmName === undefined) vmName = c.vm ?? (await nameFromTask(c));
        return c;
      },
      (c) => {
        command = c;
        draw(c);
      },
      (err) => {
        showError(messageOf(err));
        if (!command) replace(root, h("h1", null, "Command ", h("span", { class: "mono" }, id)));
      },
    );
  }

  /** @param {Command} c */
  async function nameFromTask(c) {
    if (!c.task_id || !c.vm_uuid) return null;
    try {
      const task = await ctx.api.get(`/tasks/${encodeURIComponent(c.task_id)}`);
      return task.vm_uuid === c.vm_uuid ? task.vm : null;
    } catch (err) {
      console.warn("VM name not found through the task:", err);
      return null; // the uuid is shown instead
    }
  }

  /** @param {Command} c */
  function draw(c) {
    const error = errorText(c);
    const history = c.history ?? [];
    replace(
      root,
      h("h1", null, "Command ", h("span", { class: "mono" }, c.type), " on ", nodeLink(c.node), " ", statePair(c)),
      h(
        "div",
        { class: "columns" },
        h(
          "section",
          { "aria-label": "Facts" },
          facts([
            ["Id", h("span", { class: "mono" }, c.id), "id"],
            ["Type", c.type, "type"],
            ["Node", nodeLink(c.node), "node"],
            ["VM", c.vm_uuid ? (vmName ? vmLink(vmName) : "–") : null, "vm"],
            ["VM uuid", c.vm_uuid ? h("span", { class: "mono" }, c.vm_uuid) : null, "vm_uuid"],
            ["Epoch", String(c.epoch), "epoch"],
            ["Task", c.task_id ? taskLink(c.task_id, c.task_id) : "–", "task"],
            ["Server state", badge(c.state, tone(c.state)), "state"],
            ["Agent state", c.agent_state ? badge(c.agent_state, tone(c.agent_state)) : "no journal entry reported", "agent_state"],
            ["Outcome", h("span", { class: c.answer && !c.answer.ok ? "bad-text" : null }, outcome(c)), "outcome"],
            ["Error", error ? h("span", { class: "bad-text" }, error) : null, "error"],
            ["Attempts", String(c.attempts), "attempts"],
            ["Deadline", c.deadline ? time(c.deadline) : "–", "deadline"],
            ["Created", time(c.created_at), "created"],
            ["Updated", time(c.updated_at), "updated"],
          ]),
        ),
        h(
          "section",
          null,
          h("h2", null, "Arguments"),
          jsonBlock(c.args, { "data-testid": "command-args" }),
          h("h2", null, "Answer"),
          jsonBlock(c.answer, { "data-testid": "command-answer" }),
        ),
      ),
      h("h2", null, `History (${history.length})`),
      table(
        [
          { title: "At", field: "at", cell: (t) => time(t.at) },
          { title: "From", field: "from", cell: (t) => (t.from_state ? badge(t.from_state, tone(t.from_state)) : "–") },
          { title: "To", field: "to", cell: (t) => badge(t.to_state, tone(t.to_state)) },
          { title: "Note", field: "note", cell: (t) => t.note ?? "" },
        ],
        history,
        (t) => ({ dataset: { testid: "history-row", state: t.to_state } }),
        "No transition recorded.",
      ),
    );
  }

  const refresh = debounce(() => void load(), 300);
  ctx.onEvent((e) => {
    if (e.kind === "stream.connected") refresh();
    else if (command && ((e.task_id && e.task_id === command.task_id) || e.node === command.node)) refresh();
  });
  ctx.every(() => {
    if (command && !TERMINAL.has(command.state)) refresh();
  }, 2000);
  showError(null);
  await load();
}
