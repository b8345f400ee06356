// @ts-check
/** Pure formatting helpers (no DOM): tested with `node --test web/test/`. */

/**
 * Memory in MiB as an operator reads it: "512 MiB", "2 GiB", "1.5 TiB".
 * @param {number | null | undefined} mib
 */
export function memory(mib) {
  if (mib === null || mib === undefined) return "–";
  if (Math.abs(mib) >= 1024 * 1024) return `${trim(mib / (1024 * 1024))} TiB`;
  if (Math.abs(mib) >= 1024) return `${trim(mib / 1024)} GiB`;
  return `${trim(mib)} MiB`;
}

/**
 * Disk size in GiB: "20 GiB", "1.5 TiB".
 * @param {number | null | undefined} gib
 */
export function diskSize(gib) {
  if (gib === null || gib === undefined) return "–";
  return gib >= 1024 ? `${trim(gib / 1024)} TiB` : `${trim(gib)} GiB`;
}

/**
 * A number with at most two decimals and no trailing zeros.
 * @param {number} n
 */
export function trim(n) {
  return Number.isInteger(n) ? String(n) : n.toFixed(2).replace(/\.?0+$/, "");
}

/**
 * A fraction (0..1) as a whole percentage: "42%"; null as "–".
 * @param {number | null | undefined} fraction
 */
export function percent(fraction) {
  if (fraction === null || fraction === undefined || Number.isNaN(fraction)) return "–";
  return `${Math.round(Math.min(Math.max(fraction, 0), 1) * 100)}%`;
}

/**
 * used / total clamped to 0..1 (0 when total is 0 or unknown).
 * @param {number | null | undefined} used
 * @param {number | null | undefined} total
 */
export function ratio(used, total) {
  if (!total || used === null || used === undefined) return 0;
  return Math.min(Math.max(used / total, 0), 1);
}

/**
 * Seconds as "850 ms", "12.5 s", "3 min 5 s", "2 h 4 min".
 * @param {number | null | undefined} seconds
 */
export function duration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "–";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${trim(Math.round(seconds * 10) / 10)} s`;
  const s = Math.round(seconds);
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

/**
 * How long ago `iso` was, from `now` (ms since the epoch): "3 s ago", "in 5 s".
 * @param {string | null | undefined} iso
 * @param {number} now
 */
export function ago(iso, now) {
  if (!iso) return "never";
  const then = Date.parse(iso);
  if (Number.isNaN(then)) return String(iso);
  const seconds = (now - then) / 1000;
  if (Math.abs(seconds) < 1) return "now";
  return seconds >= 0 ? `${duration(seconds)} ago` : `in ${duration(-seconds)}`;
}

/**
 * An ISO time as local "YYYY-MM-DD HH:MM:SS".
 * @param {string | null | undefined} iso
 */
export function when(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  const p = (/** @type {number} */ n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

/** The CSS class (tone) of a VM status, node health, task or command state. */
const TONES = /** @type {Record<string, string>} */ ({
  ACTIVE: "good",
  SHUTOFF: "idle",
  BUILD: "busy",
  MIGRATING: "busy",
  RESIZE: "busy",
  VERIFY_RESIZE: "busy",
  REVERT_RESIZE: "busy",
  REBOOT: "busy",
  ERROR: "bad",
  UNKNOWN: "warn",
  DELETED: "idle",
  up: "good",
  suspect: "warn",
  dead: "bad",
  fencing: "busy",
  fenced: "bad",
  fence_failed: "bad",
  ready: "good",
  flushing: "busy",
  flushed: "idle",
  unflushing: "busy",
  maintenance: "warn",
  pending: "busy",
  running: "busy",
  waiting: "warn",
  rolling_back: "warn",
  succeeded: "good",
  done: "good",
  failed: "bad",
  rolled_back: "warn",
  undone: "warn",
  skipped: "idle",
  needs_attention: "bad",
  COMPLETED: "good",
  FAILED: "bad",
  CREATED: "busy",
  SENT: "busy",
  INTERRUPTED: "warn",
  TIMED_OUT: "warn",
  RECONCILING: "busy",
  RECONCILED: "good",
  RECONCILE_RETRY: "warn",
  RECONCILE_FAILED: "bad",
  RECONCILE_SKIPPED: "idle",
});

/**
 * @param {string | null | undefined} state
 */
export function tone(state) {
  return (state && TONES[state]) || "idle";
}

/** Task states after which nothing more happens. */
export const FINISHED_TASK_STATES = new Set(["succeeded", "failed", "rolled_back", "needs_attention"]);

/**
 * @param {{state: string}} task
 */
export function taskFinished(task) {
  return FINISHED_TASK_STATES.has(task.state);
}

/**
 * A running task's progress line, from its result's `progress` ({step, fraction, message})
 * or its running step: "live_migrate: migrate transfer: 42%".
 * @param {{state: string, result?: Record<string, any> | null, steps?: {name: string, state: string}[] | null}} task
 */
export function progressLine(task) {
  const progress = task.result?.progress;
  if (progress && typeof progress === "object") {
    const parts = [progress.step, progress.message].filter(Boolean);
    // (the host's message often says the percentage already: "migrate transfer: 31%")
    const said = typeof progress.message === "string" && progress.message.includes("%");
    if (typeof progress.fraction === "number" && !said) parts.push(percent(progress.fraction));
    return parts.join(": ");
  }
  const running = (task.steps ?? []).find((s) => s.state === "running" || s.state === "waiting");
  return running ? `${running.name}: ${running.state}` : "";
}

/**
 * A task's one-line outcome for the task panel: its summary, error or state.
 * @param {{state: string, error?: string | null, result?: Record<string, any> | null}} task
 */
export function outcomeLine(task) {
  if (task.error) return task.error;
  if (typeof task.result?.summary === "string") return task.result.summary;
  return task.state.replace(/_/g, " ");
}

/**
 * The message of an API error body ({"error": {"code", "message"}}) as one line.
 * @param {number} status
 * @param {any} body
 */
export function errorLine(status, body) {
  const message = body?.error?.message ?? body?.detail;
  const text = typeof message === "string" && message ? message : `the server answered ${status}`;
  return text.replace(/\s+/g, " ").trim();
}

/**
 * Parse server-sent events from a text chunk stream: feed chunks, get complete messages.
 * Pure (no DOM, no fetch) so it can be tested.
 */
export class SseParser {
  constructor() {
    this.buffer = "";
  }

  /**
   * @param {string} chunk
   * @returns {{id: string | null, event: string, data: string}[]}
   */
  feed(chunk) {
    this.buffer += chunk.replace(/\r\n?/g, "\n");
    const out = [];
    let end;
    while ((end = this.buffer.indexOf("\n\n")) >= 0) {
      const block = this.buffer.slice(0, end);
      this.buffer = this.buffer.slice(end + 2);
      /** @type {string | null} */
      let id = null;
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line === "" || line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "id") id = value;
        else if (field === "event") event = value;
        else if (field === "data") data.push(value);
      }
      if (data.length > 0) out.push({ id, event, data: data.join("\n") });
    }
    return out;
  }
}
