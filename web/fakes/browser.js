// A fake browser for the unit tests of the console's pages (web/test/*.test.js): a small fake
// DOM, the browser globals the console's modules read (installed on import, so import this
// module before them), the shell's error bar and confirmation dialog, and a fake page ctx whose
// API answers what the test says. It lives outside web/test/ because Node 20's `node --test
// web/test/` runs every .js file under a directory named `test` as a test file.
import assert from "node:assert/strict";

// ---------------------------------------------------------------------------------------------
// A fake DOM: just what the console's builders use (elements, text, attributes, dataset,
// events, select values, and querySelector with tag, #id, .class, [attr], [attr=value] and
// descendant combinators).

export class FakeNode {
  constructor() {
    /** @type {FakeNode | null} */
    this.parentNode = null;
    /** @type {FakeNode[]} */
    this.childNodes = [];
  }
  get parentElement() {
    return isElement(this.parentNode) ? this.parentNode : null;
  }
  get firstChild() {
    return this.childNodes[0] ?? null;
  }
  get textContent() {
    return this.childNodes.map((c) => c.textContent).join("");
  }
  set textContent(value) {
    this.replaceChildren();
    if (value !== null && value !== undefined && value !== "") this.appendChild(textNode(String(value)));
  }
  appendChild(child) {
    if (child.parentNode) child.parentNode.removeChild(child);
    child.parentNode = this;
    this.childNodes.push(child);
    return child;
  }
  removeChild(child) {
    this.childNodes = this.childNodes.filter((c) => c !== child);
    child.parentNode = null;
    return child;
  }
  replaceChildren(...nodes) {
    for (const c of this.childNodes) c.parentNode = null;
    this.childNodes = [];
    this.append(...nodes);
  }
  append(...nodes) {
    for (const n of nodes) this.appendChild(typeof n === "string" ? textNode(n) : n);
  }
  contains(other) {
    for (let n = other; n; n = n.parentNode) if (n === this) return true;
    return false;
  }
}

export class FakeText extends FakeNode {
  constructor(text) {
    super();
    this.data = text;
  }
  get textContent() {
    return this.data;
  }
  set textContent(value) {
    this.data = String(value);
  }
}

/** @param {string} text */
function textNode(text) {
  return new FakeText(text);
}

/** `data-foo-bar` <-> dataset.fooBar */
function datasetOf(el) {
  const attr = (key) => `data-${String(key).replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
  return new Proxy(
    {},
    {
      get: (_, key) => el.getAttribute(attr(key)) ?? undefined,
      set: (_, key, value) => {
        el.setAttribute(attr(key), String(value));
        return true;
      },
      has: (_, key) => el.hasAttribute(attr(key)),
    },
  );
}

export class FakeElement extends FakeNode {
  constructor(tag) {
    super();
    this.tagName = tag.toUpperCase();
    this.attrs = new Map();
    this.listeners = new Map();
    this.props = {};
    this.style = {};
    this.dataset = datasetOf(this);
  }
  get children() {
    return this.childNodes.filter((c) => c instanceof FakeElement);
  }
  get childElementCount() {
    return this.children.length;
  }
  setAttribute(key, value) {
    this.attrs.set(key, String(value));
  }
  getAttribute(key) {
    return this.attrs.has(key) ? this.attrs.get(key) : null;
  }
  hasAttribute(key) {
    return this.attrs.has(key);
  }
  removeAttribute(key) {
    this.attrs.delete(key);
  }
  toggleAttribute(key, force) {
    const on = force ?? !this.attrs.has(key);
    if (on) this.attrs.set(key, "");
    else this.attrs.delete(key);
    return on;
  }
  get id() {
    return this.getAttribute("id") ?? "";
  }
  set id(value) {
    this.setAttribute("id", value);
  }
  get hidden() {
    return this.hasAttribute("hidden");
  }
  set hidden(value) {
    this.toggleAttribute("hidden", Boolean(value));
  }
  get disabled() {
    return this.hasAttribute("disabled");
  }
  set disabled(value) {
    this.toggleAttribute("disabled", Boolean(value));
  }
  get selected() {
    return "selected" in this.props ? this.props.selected : this.hasAttribute("selected");
  }
  set selected(value) {
    this.props.selected = Boolean(value);
  }
  get checked() {
    return "checked" in this.props ? this.props.checked : this.hasAttribute("checked");
  }
  set checked(value) {
    this.props.checked = Boolean(value);
  }
  get value() {
    if (this.tagName === "SELECT") {
      const options = this.querySelectorAll("option");
      const chosen = options.find((o) => o.selected) ?? options.find((o) => !o.disabled);
      return chosen ? chosen.value : "";
    }
    if ("value" in this.props) return this.props.value;
    if (this.tagName === "OPTION") return this.getAttribute("value") ?? this.textContent;
    return this.getAttribute("value") ?? "";
  }
  set value(value) {
    if (this.tagName === "SELECT") {
      for (const o of this.querySelectorAll("option")) o.selected = o.value === value;
      return;
    }
    this.props.value = String(value);
  }
  addEventListener(type, fn) {
    this.listeners.set(type, [...(this.listeners.get(type) ?? []), fn]);
  }
  removeEventListener(type, fn) {
    this.listeners.set(type, (this.listeners.get(type) ?? []).filter((f) => f !== fn));
  }
  dispatch(type) {
    const event = { type, target: this, defaultPrevented: false, preventDefault: () => (event.defaultPrevented = true) };
    for (const fn of this.listeners.get(type) ?? []) fn(event);
    return event;
  }
  click() {
    if (!this.disabled) this.dispatch("click");
  }
  focus() {}
  after(...nodes) {
    const parent = this.parentNode;
    const at = parent.childNodes.indexOf(this) + 1;
    for (const [i, n] of nodes.entries()) {
      if (n.parentNode) n.parentNode.removeChild(n);
      n.parentNode = parent;
      parent.childNodes.splice(at + i, 0, n);
    }
  }
  /** Every element under this one, in document order. */
  descendants() {
    return this.children.flatMap((c) => [c, ...c.descendants()]);
  }
  querySelectorAll(selector) {
    return this.descendants().filter((el) => el.matches(selector));
  }
  querySelector(selector) {
    return this.querySelectorAll(selector)[0] ?? null;
  }
  matches(selector) {
    return selector.split(",").some((group) => matchChain(this, group.trim().split(/\s+(?![^[]*\])/).map(compound)));
  }
  closest(selector) {
    for (let el = this; el instanceof FakeElement; el = el.parentNode) if (el.matches(selector)) return el;
    return null;
  }
}

/** @param {unknown} n */
function isElement(n) {
  return n instanceof FakeElement;
}

/** One compound selector: tag, #id, .class and [attr] / [attr=value] parts. */
function compound(text) {
  const parts = { tag: null, id: null, classes: [], attrs: [] };
  const re = /^([a-zA-Z][\w-]*)|#([\w-]+)|\.([\w-]+)|\[([\w-]+)(?:=(?:"([^"]*)"|'([^']*)'|([^\]]*)))?\]/g;
  let m;
  let seen = 0;
  while ((m = re.exec(text)) !== null) {
    seen += m[0].length;
    if (m[1]) parts.tag = m[1].toUpperCase();
    else if (m[2]) parts.id = m[2];
    else if (m[3]) parts.classes.push(m[3]);
    else parts.attrs.push([m[4], m[5] ?? m[6] ?? m[7] ?? null]);
  }
  assert.equal(seen, text.length, `the fake DOM does not understand the selector ${text}`);
  return parts;
}

function matchOne(el, c) {
  if (c.tag && el.tagName !== c.tag) return false;
  if (c.id && el.id !== c.id) return false;
  const classes = (el.getAttribute("class") ?? "").split(/\s+/);
  if (!c.classes.every((k) => classes.includes(k))) return false;
  return c.attrs.every(([k, v]) => el.hasAttribute(k) && (v === null || el.getAttribute(k) === v));
}

function matchChain(el, chain) {
  if (!matchOne(el, chain[chain.length - 1])) return false;
  let i = chain.length - 2;
  for (let up = el.parentNode; up instanceof FakeElement && i >= 0; up = up.parentNode) {
    if (matchOne(up, chain[i])) i -= 1;
  }
  return i < 0;
}

export const fakeDocument = {
  activeElement: null,
  body: new FakeElement("body"),
  createElement: (tag) => new FakeElement(tag),
  createTextNode: (text) => new FakeText(String(text)),
  getElementById(id) {
    return this.body.querySelector(`#${id}`);
  },
};

// The browser's globals the console's modules read, before they are imported.
Object.assign(globalThis, {
  document: fakeDocument,
  Node: FakeNode,
  HTMLElement: FakeElement,
  CSS: { escape: (s) => String(s).replace(/["\\]/g, "\\$&") },
  window: { location: { hash: "#/", origin: "https://bollard.test:8700", host: "bollard.test:8700" } },
  sessionStorage: { getItem: () => null, setItem: () => {}, removeItem: () => {} },
});

const { h } = await import("../../src/bollard/server/web/static/js/dom.js");

// ---------------------------------------------------------------------------------------------
// The shell (index.html) and a fake page ctx.

/**
 * Put the shell's error bar and confirmation dialog (index.html) in a fresh body; the dialog
 * closes with `confirmAnswer` ("ok" confirms) once shown.
 * @param {string} [confirmAnswer]
 */
export function resetShell(confirmAnswer = "ok") {
  const dialog = h(
    "dialog",
    { id: "confirm" },
    h("h2", { id: "confirm-title" }),
    h("p", { id: "confirm-text" }),
    h("button", { "data-testid": "confirm-cancel" }),
    h("button", { "data-testid": "confirm-ok" }),
  );
  dialog.showModal = () => {
    setImmediate(() => {
      dialog.returnValue = confirmAnswer;
      dialog.dispatch("close");
    });
  };
  fakeDocument.body.replaceChildren(h("p", { id: "error", hidden: true }), dialog);
}

/** The error bar's text, or null while it is hidden. */
export function errorBar() {
  const bar = fakeDocument.getElementById("error");
  return bar.hidden ? null : bar.textContent;
}

/**
 * A fake ctx whose API answers `answers["GET /cells"]` (a value, a function of the body, or
 * an Error to throw) and records every call.
 * @param {Record<string, any>} answers
 * @param {{can?: (action: string) => boolean}} [options]
 */
export function fakeCtx(answers, options = {}) {
  const calls = [];
  const went = [];
  const api = {
    async call(method, path, opts = {}) {
      calls.push({ method, path, body: opts.body });
      const key = `${method} ${path}`;
      assert.ok(key in answers, `no answer for ${key}`);
      const answer = answers[key];
      if (answer instanceof Error) throw answer;
      return typeof answer === "function" ? answer(opts.body) : structuredClone(answer);
    },
    get(path, query) {
      return this.call("GET", path, { query });
    },
    post(path, body) {
      return this.call("POST", path, { body });
    },
    patch(path, body) {
      return this.call("PATCH", path, { body });
    },
    del(path) {
      return this.call("DELETE", path);
    },
    async all(path, query) {
      return (await this.get(path, query)).items;
    },
  };
  const ctx = {
    api,
    me: { user: "admin", role: "admin", actor: "admin", permissions: [] },
    view: h("div"),
    can: options.can ?? (() => true),
    onEvent: () => () => {},
    every: () => {},
    go: (route) => went.push(route),
    refreshTasks: () => {},
  };
  return { ctx, calls, went };
}

/** Let every pending promise and click handler run. */
export async function settle() {
  for (let i = 0; i < 10; i++) await new Promise((resolve) => setImmediate(resolve));
}

/** The text of the cell `field` of each row. */
export function column(root, field) {
  return root.querySelectorAll(`td[data-field=${field}]`).map((td) => td.textContent);
}

/** @param {FakeElement} form @param {string} name @param {string} value */
export function fill(form, name, value) {
  const input = form.querySelector(`[name=${name}]`);
  assert.ok(input, `no field ${name}`);
  input.value = value;
}

/** @param {Record<string, any>} item @param {string} key */
export function without(item, key) {
  const copy = { ...item };
  delete copy[key];
  return copy;
}

/**
 * Choose the radio of `name` whose value is `value` in `root` as a click would: it is checked,
 * the others of its name are not, and it gets a `change` event.
 * @param {FakeElement} root
 * @param {string} value
 * @param {string} [name]
 */
export function pick(root, value, name = "to") {
  const radios = root.querySelectorAll(`input[name=${name}]`);
  const chosen = radios.find((r) => r.value === value);
  assert.ok(chosen, `no radio ${name}=${value}`);
  assert.ok(!chosen.disabled, `the radio ${name}=${value} is disabled`);
  for (const r of radios) r.checked = r === chosen;
  chosen.dispatch("change");
}
