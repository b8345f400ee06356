// @ts-check
/** A VM's instance actions (`GET /api/v1/vms/{name}/actions`: who asked for what and how it
 * ended, as Nova's instance actions) and each action's events (its steps, from
 * `GET .../actions/{request_id}`): tones, durations and the table whose rows open to show
 * their events. Pure builders: no state, no requests. */
import { h, link, table } from "../js/dom.js";
import { ago, duration, when } from "../js/format.js";
import { badge } from "../js/ui.js";
import { taskRoute } from "./vm_common.js";

/**
 * An action as the API gives it (`ActionOut`); `events` only in one action's answer.
 * @typedef {object} Action
 * @property {string} request_id
 * @property {string} action
 * @property {string} vm
 * @property {string} vm_uuid
 * @property {string | null} actor
 * @property {string} task_id
 * @property {string} start_time
 * @property {string | null} finish_time
 * @property {"running" | "success" | "error"} result
 * @property {string | null} message
 * @property {ActionEvent[] | null} [events]
 */
/**
 * @typedef {{event: string, start_time: string | null, finish_time: string | null, result: string, details: string | null}} ActionEvent
 */
/**
 * What is shown under an opened action: its events, or that they are being read, or why
 * they could not be.
 * @typedef {{events: ActionEvent[]} | {loading: true} | {error: string}} Opened
 */

const RESULT_TONES = /** @type {Record<string, string>} */ ({
  success: "good",
  error: "bad",
  running: "busy",
  pending: "busy",
  skipped: "idle",
  undone: "warn",
});

/**
 * The tone of an action's or an event's result.
 * @param {string | null | undefined} result
 */
export function resultTone(result) {
  return (result && RESULT_TONES[result]) || "idle";
}

/**
 * How long it took, or has taken so far ("" without a start).
 * @param {string | null | undefined} start
 * @param {string | null | undefined} finish
 * @param {number} now
 */
export function tookText(start, finish, now) {
  if (!start) return "";
  const from = Date.parse(start);
  const to = finish ? Date.parse(finish) : now;
  if (Number.isNaN(from) || Number.isNaN(to)) return "";
  return duration(Math.max(0, (to - from) / 1000));
}

/**
 * The id of the row that shows an action's events (for aria-controls).
 * @param {string} requestId
 */
export function eventsRowId(requestId) {
  return `action-events-${requestId.replace(/[^\w-]/g, "_")}`;
}

/**
 * The events of one action (its steps), in order.
 * @param {ActionEvent[]} events
 * @param {number} now
 */
export function actionEventsTable(events, now) {
  return table(
    [
      { title: "Event", field: "event", cell: (e) => e.event },
      { title: "Result", field: "result", cell: (e) => badge(e.result, resultTone(e.result)) },
      { title: "Start", field: "start", cell: (e) => (e.start_time ? when(e.start_time) : "–") },
      { title: "Finish", field: "finish", cell: (e) => (e.finish_time ? when(e.finish_time) : "–") },
      { title: "Took", field: "took", cell: (e) => tookText(e.start_time, e.finish_time, now) },
      { title: "Details", field: "details", cell: (e) => e.details ?? "" },
    ],
    events,
    (e) => ({ dataset: { testid: "action-event-row", event: e.event, result: e.result } }),
    "No events recorded.",
  );
}

const COLUMNS = ["Request", "Action", "Actor", "Start", "Finish", "Result", "Message", "Events"];

/**
 * The actions, newest first: request id, action, actor, start, finish, result and message,
 * each with an "Events" button (`toggle(request_id)`) that opens a row under it with its
 * events (`opened`).
 * @param {Action[]} actions
 * @param {Map<string, Opened>} opened the actions whose events are shown
 * @param {(requestId: string) => void} toggle
 * @param {number} now
 */
export function actionsTable(actions, opened, toggle, now) {
  const head = h("thead", null, h("tr", null, COLUMNS.map((c) => h("th", { scope: "col" }, c))));
  /** @param {string | undefined} field @param {...import("../js/dom.js").Child | import("../js/dom.js").Child[]} content */
  const td = (field, ...content) => h("td", { dataset: { field } }, content);
  const rows = actions.flatMap((a) => {
    const open = opened.get(a.request_id);
    const rowId = eventsRowId(a.request_id);
    const button = h(
      "button",
      {
        type: "button",
        class: "link",
        value: a.request_id,
        dataset: { testid: "action-events-toggle" }, // (no data-action: it reads, it changes nothing)
        "aria-expanded": open ? "true" : "false",
        "aria-controls": open ? rowId : null,
        onclick: () => toggle(a.request_id),
      },
      open ? "Hide" : "Events",
    );
    const main = h(
      "tr",
      { dataset: { testid: "action-row", request: a.request_id, actionName: a.action, result: a.result } },
      td("request", h("code", { title: a.request_id }, shortRequest(a.request_id))),
      td("action", a.task_id ? link(taskRoute(a.task_id), a.action, { title: `task ${a.task_id}` }) : a.action),
      td("actor", a.actor ?? ""),
      td("start", h("time", { datetime: a.start_time, title: ago(a.start_time, now) }, when(a.start_time))),
      td("finish", a.finish_time ? when(a.finish_time) : ""),
      td("result", badge(a.result, resultTone(a.result))),
      td("message", a.message ?? ""),
      td("events", button),
    );
    if (!open) return [main];
    return [main, h("tr", { id: rowId, dataset: { testid: "action-events", request: a.request_id } }, h("td", { colspan: COLUMNS.length }, openedContent(open, now)))];
  });
  const body = h(
    "tbody",
    null,
    rows.length === 0 ? h("tr", null, h("td", { colspan: COLUMNS.length, class: "empty" }, "No actions recorded.")) : rows,
  );
  return h("div", { class: "table-wrap" }, h("table", null, head, body));
}

/**
 * @param {Opened} open
 * @param {number} now
 */
function openedContent(open, now) {
  if ("events" in open) return actionEventsTable(open.events, now);
  if ("error" in open) return h("p", { class: "field-error" }, open.error);
  return h("p", { class: "muted", "aria-busy": "true" }, "Loading…");
}

/**
 * A request id as shown in the table: its last 12 characters (the whole in the title).
 * @param {string} id
 */
export function shortRequest(id) {
  return id.length > 14 ? `…${id.slice(-12)}` : id;
}
