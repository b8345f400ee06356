// @ts-check
/** Parts of a task's page: its steps table and its placement (the scheduler's ranking and
 * the nodes it rejected, with why). */
import { h, table } from "../js/dom.js";
import { tone, when } from "../js/format.js";
import { badge } from "../js/ui.js";
import { clock, commandLink, nodeLink, shortJson } from "./ops_parts.js";

/**
 * @typedef {object} Step
 * @property {number} idx
 * @property {string} name
 * @property {string} state
 * @property {Record<string, any>} result
 * @property {Record<string, string>} commands
 * @property {string | null} error
 * @property {string | null} started_at
 * @property {string | null} finished_at
 * @property {string | null} undo_started_at
 * @property {string | null} undo_finished_at
 * @property {string | null} undo_error
 * @property {number} attempts
 * @property {string | null} retry_at
 */

/**
 * A time of day as text, "22:03:11".
 * @param {string} iso
 */
function clockText(iso) {
  const full = when(iso);
  return full.length > 11 ? full.slice(11) : full;
}

/**
 * The step's retries: "retry 2 at 12:00:05" while waiting, "2 retries" after.
 * @param {Step} s
 */
export function attemptsText(s) {
  if (s.state === "waiting" && s.retry_at) return `retry ${s.attempts} at ${clockText(s.retry_at)}`;
  if (s.attempts) return `${s.attempts} ${s.attempts === 1 ? "retry" : "retries"}`;
  return "";
}

/**
 * What became of the step's undo: "failed: …", "undone 12:00:05", "undoing since …".
 * @param {Step} s
 */
export function undoText(s) {
  if (s.undo_error) return `failed: ${s.undo_error}`;
  if (s.undo_finished_at) return `undone at ${clockText(s.undo_finished_at)}`;
  if (s.undo_started_at) return `undoing since ${clockText(s.undo_started_at)}`;
  return "";
}

/**
 * @param {Step[]} steps
 */
export function stepsTable(steps) {
  return table(
    [
      { title: "#", field: "idx", cell: (s) => s.idx + 1 },
      { title: "Step", field: "name", cell: (s) => h("span", { class: "mono" }, s.name) },
      { title: "State", field: "state", cell: (s) => badge(s.state, tone(s.state)) },
      { title: "Retries", field: "attempts", cell: (s) => attemptsText(s) },
      { title: "Started", field: "started", cell: (s) => clock(s.started_at) },
      { title: "Finished", field: "finished", cell: (s) => clock(s.finished_at) },
      {
        title: "Commands",
        field: "commands",
        cell: (s) =>
          Object.entries(s.commands ?? {}).map(([name, id]) =>
            h("span", { class: "command-ref" }, `${name}: `, commandLink(id)),
          ),
      },
      { title: "Result", field: "result", cell: (s) => shortJson(s.result) },
      { title: "Error", field: "error", cell: (s) => (s.error ? h("span", { class: "bad-text" }, s.error) : "") },
      {
        title: "Undo",
        field: "undo",
        cell: (s) => h("span", { class: s.undo_error ? "bad-text" : null }, undoText(s)),
      },
    ],
    steps,
    (s) => ({ dataset: { testid: "step-row", step: s.name, state: s.state } }),
    "No steps yet.",
  );
}

/**
 * The scheduler's choice: chosen node and selector, the ranking, and the rejected nodes.
 * @param {{chosen?: string | null, selector?: string | null, wanted?: string | null, ranking?: {node: string, score: number}[], rejected?: {node: string, reason: string}[]}} placement
 */
export function placementSection(placement) {
  const ranking = placement.ranking ?? [];
  const rejected = placement.rejected ?? [];
  return h(
    "section",
    { "data-testid": "placement", "aria-label": "Placement" },
    h("h2", null, "Placement"),
    h(
      "p",
      null,
      "Chosen: ",
      h("strong", { "data-field": "chosen" }, nodeLink(placement.chosen) ?? "none"),
      placement.selector ? ` by selector ${placement.selector}` : "",
      placement.wanted ? ` (asked for ${placement.wanted})` : "",
    ),
    table(
      [
        { title: "Candidate", field: "node", cell: (r) => nodeLink(r.node) },
        { title: "Score", field: "score", cell: (r) => String(r.score) },
        { title: "", field: "chosen", cell: (r) => (r.node === placement.chosen ? badge("chosen", "good") : "") },
      ],
      ranking,
      (r) => ({ dataset: { testid: "candidate-row", node: r.node } }),
      "No node could take it.",
    ),
    rejected.length
      ? table(
          [
            { title: "Rejected", field: "node", cell: (r) => nodeLink(r.node) },
            { title: "Why", field: "reason", cell: (r) => r.reason },
          ],
          rejected,
          (r) => ({ dataset: { testid: "rejected-row", node: r.node } }),
        )
      : null,
  );
}
