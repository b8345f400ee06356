// @ts-check
/** The overview's Servers card: the management servers sharing the cluster's database
 * (`GET /api/v1/servers`), each with its role (the leader runs the cluster-wide duties), its
 * state when it is not up, and the agents whose sessions it holds. */
import { h } from "../js/dom.js";
import { badge } from "../js/ui.js";

/**
 * @typedef {object} ServerItem `ServerOut`
 * @property {string} id
 * @property {string} name
 * @property {string} url
 * @property {string} version
 * @property {string} [schema_revision] the newest schema its release knows (absent from older servers)
 * @property {string} state up, stopped, gone or expired
 * @property {string} role leader, member or "-" (not up)
 * @property {number} agents
 * @property {boolean} this the server that answered
 */

/** @typedef {{items: ServerItem[], leader: string | null}} ServerList `GET /api/v1/servers` */

const SERVER_TONES = /** @type {Record<string, string>} */ ({
  leader: "good",
  member: "idle",
  up: "good",
  stopped: "idle",
  gone: "bad",
  expired: "warn",
});

/**
 * The tone of a server's badge: its role while up, else its state.
 * @param {string | null | undefined} shown
 */
export function serverTone(shown) {
  return (shown && SERVER_TONES[shown]) || "idle";
}

/**
 * The Servers card's body: how many are up, the leader, and each server.
 * @param {ServerList} list
 */
export function serversCard(list) {
  const items = list.items ?? [];
  if (items.length === 0) return h("p", { class: "muted", "data-field": "servers" }, "No server has registered yet.");
  const up = items.filter((s) => s.role !== "-").length;
  const leader = items.find((s) => s.id === list.leader);
  const leaderName = leader ? leader.name : list.leader;
  return [
    h("div", { class: "big", "data-field": "servers-up" }, `${up} / ${items.length}`),
    h("p", { class: "muted", "data-field": "servers-leader" }, leaderName ? `up; leader ${leaderName}` : "up; no leader now"),
    h(
      "ul",
      { class: "overview-counts", "data-field": "servers" },
      items.map((s) => {
        const shown = s.role === "-" ? s.state : s.role;
        return h(
          "li",
          { dataset: { server: s.name, role: s.role, state: s.state }, title: `${s.url} (Bollard ${s.version}${s.schema_revision ? `, schema ${s.schema_revision}` : ""})` },
          s.name,
          s.this ? " (this)" : null,
          " ",
          badge(shown, serverTone(shown)),
          s.role === "-" ? null : ` ${agentsText(s.agents)}`,
        );
      }),
    ),
  ];
}

/** @param {number} n */
function agentsText(n) {
  return n === 1 ? "1 agent" : `${n} agents`;
}

/**
 * The server list, or null when it cannot be read (the card is then left out).
 * @param {import("../js/api.js").Api} api
 * @returns {Promise<ServerList | null>}
 */
export async function loadServers(api) {
  try {
    return /** @type {ServerList} */ (await api.get("/servers"));
  } catch (err) {
    console.warn("the server list could not be read", err);
    return null;
  }
}
