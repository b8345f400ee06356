// @ts-check
/** The graphical console of the console page: noVNC's RFB client (served by the server at
 * /ui/novnc/, from Debian's `novnc` package or npm's `@novnc/novnc`) on a WebSocket to the
 * server's `/console/vnc` with a single-use ticket from `POST /vms/{name}/console/vnc`. The
 * server relays it through the node's agent to the VM's display, which listens on the host
 * only. The token never goes in the WebSocket's URL: only the short-lived ticket does. */
import { pathOf } from "../js/api.js";
import { h, replace } from "../js/dom.js";
import { actionButton, messageOf } from "../js/ui.js";

/** Where noVNC's client is served (relative to this module: /ui/novnc/core/rfb.js). */
const RFB_MODULE = "../novnc/core/rfb.js";
const NO_NOVNC = "the graphical console needs noVNC on the server (see README)";

/**
 * @typedef {object} Rfb the part of noVNC's RFB object used here (its documented API)
 * @property {boolean} scaleViewport
 * @property {boolean} resizeSession
 * @property {() => void} disconnect
 * @property {() => void} sendCtrlAltDel
 * @property {() => void} focus
 * @property {(credentials: {password: string}) => void} sendCredentials
 * @property {(type: string, fn: (e: any) => void) => void} addEventListener
 */

/**
 * The graphical console's controls, status line and screen.
 * @param {import("../js/ui.js").Ctx} ctx
 * @param {string} name the VM
 */
export function vncPanel(ctx, name) {
  /** @type {Rfb | null} */
  let rfb = null;
  const status = h("p", { class: "vnc-status", "data-testid": "vnc-status", "aria-live": "polite", dataset: { state: "idle" } }, "not connected");
  const idle = h("p", { class: "idle" }, "Connect to see the VM's screen; click it to type into the VM.");
  const screen = h("div", { class: "vnc-screen", "data-testid": "vnc-screen" }, idle);
  const credentials = h("div");

  const connect = actionButton(ctx, "vm.console", "vnc-connect", "Connect", () => open(), { class: "action primary" });
  /** Whether the user closed the connection (then that is the reason shown). */
  let closing = false;
  const disconnect = actionButton(ctx, "vm.console", "vnc-disconnect", "Disconnect", async () => {
    closing = true;
    rfb?.disconnect();
  });
  const ctrlAltDel = actionButton(ctx, "vm.console", "vnc-ctrl-alt-del", "Send Ctrl-Alt-Del", async () => {
    rfb?.sendCtrlAltDel();
    rfb?.focus();
  });
  /**
   * @param {"idle" | "connecting" | "connected" | "disconnected"} state
   * @param {string} text
   */
  function show(state, text) {
    status.dataset.state = state;
    status.textContent = text;
    const live = state === "connecting" || state === "connected";
    if (connect) connect.hidden = live;
    if (disconnect) disconnect.hidden = !live;
    if (ctrlAltDel) ctrlAltDel.hidden = state !== "connected";
  }

  show("idle", "not connected");

  async function open() {
    closing = false;
    show("connecting", "connecting…");
    /** @type {new (target: Element, channel: WebSocket, options?: object) => Rfb} */
    let RFB;
    try {
      RFB = (await import(RFB_MODULE)).default;
    } catch (err) {
      console.warn("noVNC could not be loaded", err);
      show("disconnected", NO_NOVNC);
      return;
    }
    let answer;
    try {
      answer = await ctx.api.post(`${pathOf("vms", name)}/console/vnc`, {});
    } catch (err) {
      show("disconnected", `disconnected: ${messageOf(err)}`);
      throw err;
    }
    const url = new URL(answer.path, window.location.href);
    url.protocol = window.location.protocol === "https:" ? "wss:" : "ws:";
    // The socket is opened here, not by noVNC, to read the reason the server closes it with
    // (a refused ticket, a node without a display), which noVNC does not pass on.
    const socket = new WebSocket(url.href, ["binary"]);
    socket.binaryType = "arraybuffer";
    /** @type {CloseEvent | null} */
    let closed = null;
    socket.addEventListener("close", (e) => (closed = e));
    /** @type {string | null} */
    let refused = null;
    const client = new RFB(screen, socket, { wsProtocols: ["binary"] });
    rfb = client;
    client.scaleViewport = true;
    client.resizeSession = false;
    client.addEventListener("connect", () => {
      idle.remove();
      show("connected", `connected to ${name} on ${answer.node}`);
      client.focus();
    });
    client.addEventListener("desktopname", (e) => {
      if (status.dataset.state === "connected" && e.detail?.name) {
        status.textContent = `connected to ${name} on ${answer.node} (${e.detail.name})`;
      }
    });
    client.addEventListener("securityfailure", (e) => {
      refused = `the VNC server refused the connection: ${e.detail?.reason || `status ${e.detail?.status}`}`;
    });
    client.addEventListener("credentialsrequired", () => askPassword(client));
    client.addEventListener("disconnect", (e) => {
      if (rfb === client) rfb = null;
      replace(credentials);
      const reason = closing
        ? "closed"
        : refused ?? (closed?.reason || (e.detail?.clean ? "the server closed it" : "the connection was lost"));
      show("disconnected", `disconnected: ${reason}`);
      if (!idle.isConnected) screen.append(idle);
    });
  }

  /**
   * The VNC server asks for a password: ask the user (it goes to the VM's VNC server only).
   * @param {Rfb} client
   */
  function askPassword(client) {
    const input = h("input", { type: "password", id: "vnc-password", autocomplete: "off", "data-testid": "vnc-password" });
    const form = h(
      "form",
      { class: "toolbar" },
      h("label", { for: "vnc-password" }, "The VM's VNC server asks for a password"),
      input,
      h("button", { type: "submit" }, "Send"),
    );
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      client.sendCredentials({ password: /** @type {HTMLInputElement} */ (input).value });
      replace(credentials);
    });
    replace(credentials, form);
    input.focus();
  }

  return {
    root: h(
      "div",
      null,
      h("div", { class: "toolbar" }, connect, disconnect, ctrlAltDel, status),
      credentials,
      screen,
    ),
    /** Close the connection (the page is left). */
    stop() {
      rfb?.disconnect();
      rfb = null;
    },
  };
}
