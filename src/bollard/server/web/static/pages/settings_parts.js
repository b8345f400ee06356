// @ts-check
/** Parts of the settings page: the input for one setting, chosen by its type (true/false: a
 * checkbox; choices: a select; numbers: a number input with the setting's range; text: a
 * text input). */
import { h } from "../js/dom.js";

/**
 * @typedef {object} Setting
 * @property {string} key
 * @property {any} value
 * @property {any} default
 * @property {string} type "bool", "int", "float" or "str"
 * @property {string} help
 * @property {string} allowed e.g. "a number from 1 to 600"
 * @property {number | null} [minimum]
 * @property {number | null} [maximum]
 * @property {string[] | null} [choices]
 */

/**
 * @typedef {object} Editor
 * @property {HTMLElement} control what goes in the row
 * @property {HTMLInputElement | HTMLSelectElement} input the element that takes the value
 * @property {() => any} value the value to send: a boolean, or the text as typed (the server
 *   parses it against the setting's type and range, and names the range when it refuses)
 * @property {() => boolean} dirty whether it differs from the setting's current value
 */

/**
 * A setting's value as text ("true", "30", "report").
 * @param {any} value
 */
export function shown(value) {
  return value === null || value === undefined ? "–" : String(value);
}

/**
 * @param {Setting} s
 * @returns {Editor}
 */
export function editor(s) {
  const common = { name: s.key, "data-testid": "setting-input", "aria-label": `${s.key} (${s.allowed})` };
  if (s.type === "bool") {
    const input = /** @type {HTMLInputElement} */ (h("input", { type: "checkbox", ...common, checked: Boolean(s.value) }));
    const text = h("span", null, shown(Boolean(s.value)));
    input.addEventListener("change", () => (text.textContent = String(input.checked)));
    return {
      control: h("label", { class: "check" }, input, text),
      input,
      value: () => input.checked,
      dirty: () => input.checked !== Boolean(s.value),
    };
  }
  if (s.choices && s.choices.length) {
    const choices = s.choices.includes(String(s.value)) ? s.choices : [String(s.value), ...s.choices];
    const input = /** @type {HTMLSelectElement} */ (
      h("select", common, choices.map((c) => h("option", { value: c, selected: c === String(s.value) }, c)))
    );
    return { control: input, input, value: () => input.value, dirty: () => input.value !== String(s.value) };
  }
  if (s.type === "int" || s.type === "float") {
    const input = /** @type {HTMLInputElement} */ (
      h("input", {
        type: "number",
        ...common,
        value: String(s.value),
        min: s.minimum ?? null,
        max: s.maximum ?? null,
        step: s.type === "int" ? "1" : "any",
        inputmode: s.type === "int" ? "numeric" : "decimal",
      })
    );
    // A number input's value is "" while what is typed is not a number: send that, and the
    // server's refusal names the range.
    return { control: input, input, value: () => input.value.trim(), dirty: () => input.value.trim() !== String(s.value) };
  }
  const input = /** @type {HTMLInputElement} */ (h("input", { type: "text", ...common, value: shown(s.value) }));
  return { control: input, input, value: () => input.value, dirty: () => input.value !== String(s.value) };
}
