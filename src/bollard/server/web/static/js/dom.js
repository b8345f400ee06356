// @ts-check
/** Small DOM helpers: build elements without innerHTML (nothing the API returns is ever
 * parsed as HTML). */

/**
 * @typedef {string | number | Node | null | undefined | false} Child
 */

/**
 * An element: `h("td", {dataset: {field: "health"}}, "up")`. Attributes: `class`, `dataset`,
 * `on<event>` handlers, booleans (true sets, false omits), anything else as an attribute.
 * @param {string} tag
 * @param {Record<string, any> | null} [attrs]
 * @param {...(Child | Child[])} children
 * @returns {HTMLElement}
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs ?? {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "dataset") {
      for (const [k, v] of Object.entries(value)) {
        if (v !== null && v !== undefined) el.dataset[k] = String(v);
      }
    } else if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (value === true) {
      el.setAttribute(key, "");
    } else {
      el.setAttribute(key, String(value));
    }
  }
  append(el, children);
  return el;
}

/**
 * @param {Node} el
 * @param {(Child | Child[])[]} children
 */
function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/**
 * Replace an element's children.
 * @param {Element} el
 * @param {...(Child | Child[])} children
 */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

/**
 * @template T
 * @typedef {object} Column
 * @property {string} title
 * @property {string} [field] data-field of the cell (test hook and CSS)
 * @property {(row: T) => Child | Child[]} cell
 */

/**
 * A table: one row per item, `rowAttrs` giving each row's attributes (data-testid...).
 * @template T
 * @param {Column<T>[]} columns
 * @param {T[]} rows
 * @param {(row: T) => Record<string, any>} rowAttrs
 * @param {string} [empty] text shown when there are no rows
 */
export function table(columns, rows, rowAttrs, empty = "Nothing to show.") {
  const head = h("thead", null, h("tr", null, columns.map((c) => h("th", { scope: "col" }, c.title))));
  const body = h(
    "tbody",
    null,
    rows.length === 0
      ? h("tr", null, h("td", { colspan: columns.length, class: "empty" }, empty))
      : rows.map((row) =>
          h("tr", rowAttrs(row), columns.map((c) => h("td", { dataset: { field: c.field } }, c.cell(row)))),
        ),
  );
  return h("div", { class: "table-wrap" }, h("table", null, head, body));
}

/**
 * A definition list of label/value pairs (skipping null values).
 * @param {[string, Child | Child[], string?][]} pairs label, value, optional data-field
 */
export function facts(pairs) {
  return h(
    "dl",
    { class: "facts" },
    pairs
      .filter(([, v]) => v !== null && v !== undefined)
      .map(([label, value, field]) => [h("dt", null, label), h("dd", { dataset: { field } }, value)]),
  );
}

/**
 * A link inside the console.
 * @param {string} route e.g. "#/vms/web1"
 * @param {Child} text
 * @param {Record<string, any>} [attrs]
 */
export function link(route, text, attrs = {}) {
  return h("a", { href: route, ...attrs }, text);
}
