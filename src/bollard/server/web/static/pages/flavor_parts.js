// @ts-check
/** What the flavor pages and the VM pages share about flavors: routes, a flavor's size and
 * label as an operator reads them, its properties typed as `key=value` lines (parsed here,
 * and turned into the PATCH body that sets and unsets them), the delete confirmation, and
 * the tables drawn from `FlavorOut` (GET /api/v1/flavors). Pure builders: no state, no
 * requests. */
import { facts, h, link, table } from "../js/dom.js";
import { memory, when } from "../js/format.js";

/**
 * A flavor as `GET /api/v1/flavors` gives it.
 * @typedef {object} Flavor
 * @property {string} id
 * @property {string} name
 * @property {number} vcpus
 * @property {number} memory_mb
 * @property {number} disk_mb the root disk (vda) in MiB; 0: none
 * @property {string | null} description
 * @property {Record<string, string>} properties
 * @property {number} used_by VMs whose current flavor it is
 * @property {string} created_at
 * @property {string} updated_at
 */
/**
 * A flavor as a VM or a resize recorded it when it was applied (`FlavorRef`); no name: a
 * size given by hand.
 * @typedef {{id: string | null, name: string | null, vcpus: number, memory_mb: number, disk_mb: number, properties?: Record<string, string>}} FlavorRef
 */

export const FLAVORS_ROUTE = "#/flavors";

/** @param {string} name */
export function flavorRoute(name) {
  return `#/flavors/${encodeURIComponent(name)}`;
}

/**
 * A flavor's name, or "custom" for a size given by hand (no flavor, or a ref without name).
 * @param {FlavorRef | null | undefined} ref
 */
export function flavorLabel(ref) {
  return ref?.name ? ref.name : "custom";
}

/**
 * A size in one line: "2 vCPU, 1 GiB, 10 GiB root disk" ("no root disk" for 0).
 * @param {{vcpus: number, memory_mb: number, disk_mb?: number | null} | null | undefined} size
 */
export function flavorSize(size) {
  if (!size) return "–";
  const disk = size.disk_mb ? `${memory(size.disk_mb)} root disk` : "no root disk";
  return `${size.vcpus} vCPU, ${memory(size.memory_mb)}, ${disk}`;
}

/**
 * A flavor with its size, as a choice in a select: "small (2 vCPU, 1 GiB, 10 GiB root disk)".
 * @param {{name: string, vcpus: number, memory_mb: number, disk_mb?: number | null}} flavor
 */
export function flavorOption(flavor) {
  return `${flavor.name} (${flavorSize(flavor)})`;
}

/**
 * A flavor ref as a link to its flavor (when it has a name) with its size as the title.
 * @param {FlavorRef | null | undefined} ref
 */
export function flavorCell(ref) {
  const label = flavorLabel(ref);
  const title = ref ? flavorSize(ref) : "a size given by hand (no flavor)";
  return ref?.name ? link(flavorRoute(ref.name), label, { title }) : h("span", { title }, label);
}

/**
 * Properties on one line, by key: "hw:cpu_policy=dedicated, tier=gold" ("" for none).
 * @param {Record<string, string> | null | undefined} properties
 */
export function propertiesLine(properties) {
  return Object.keys(properties ?? {})
    .sort()
    .map((k) => `${k}=${/** @type {Record<string, string>} */ (properties)[k]}`)
    .join(", ");
}

/**
 * Properties as the lines of the form's text area: "key=value" by key.
 * @param {Record<string, string> | null | undefined} properties
 */
export function propertiesText(properties) {
  return Object.keys(properties ?? {})
    .sort()
    .map((k) => `${k}=${/** @type {Record<string, string>} */ (properties)[k]}`)
    .join("\n");
}

/**
 * Read `key=value` lines (blank lines skipped; spaces around the key and the value trimmed;
 * the value may hold '='). Each line that is not one is named in `errors` by its number.
 * @param {string} text
 * @returns {{properties: Record<string, string>, errors: string[]}}
 */
export function parseProperties(text) {
  /** @type {Record<string, string>} */
  const properties = {};
  /** @type {string[]} */
  const errors = [];
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.trim();
    if (line === "") return;
    const eq = line.indexOf("=");
    const key = eq < 0 ? "" : line.slice(0, eq).trim();
    if (eq < 0) errors.push(`line ${i + 1}: "${line}" is not key=value`);
    else if (key === "") errors.push(`line ${i + 1}: "${line}" has no key before '='`);
    else if (Object.hasOwn(properties, key)) errors.push(`line ${i + 1}: the key ${key} is given twice`);
    else properties[key] = line.slice(eq + 1).trim();
  });
  return { properties, errors };
}

/**
 * The PATCH body that turns `old` properties into `next`: the keys added or changed in
 * `properties`, the keys gone in `unset_properties`; {} when nothing changed.
 * @param {Record<string, string>} old
 * @param {Record<string, string>} next
 * @returns {{properties?: Record<string, string>, unset_properties?: string[]}}
 */
export function propertyChanges(old, next) {
  /** @type {Record<string, string>} */
  const set = {};
  for (const [k, v] of Object.entries(next)) {
    if (old[k] !== v) set[k] = v;
  }
  const unset = Object.keys(old)
    .filter((k) => !Object.hasOwn(next, k))
    .sort();
  /** @type {{properties?: Record<string, string>, unset_properties?: string[]}} */
  const body = {};
  if (Object.keys(set).length > 0) body.properties = set;
  if (unset.length > 0) body.unset_properties = unset;
  return body;
}

/**
 * The confirmation before deleting a flavor.
 * @param {string} name
 * @param {number} usedBy
 */
export function deleteFlavorText(name, usedBy) {
  const use =
    usedBy > 0
      ? ` ${usedBy} VM${usedBy === 1 ? " has" : "s have"} it as current flavor: the server refuses while any does.`
      : "";
  return (
    `Delete flavor ${name}? It can no longer be chosen for new VMs or resizes. VMs keep their ` +
    `own copy of a flavor, so no VM changes size.${use}`
  );
}

/**
 * Whether a live event concerns the flavor pages (a flavor changed; a VM created, resized or
 * deleted changes "used by").
 * @param {{kind: string, vm?: string | null, data?: Record<string, any> | null}} e
 * @param {string} [name] one flavor only
 */
export function concernsFlavor(e, name) {
  if (e.kind.startsWith("flavor.")) return name === undefined || e.data?.flavor === name || e.data?.name === name;
  return Boolean(e.vm);
}

/**
 * The flavor table: name (a link), vCPUs, memory, root disk, used by, properties,
 * description, and a last column of `actions(flavor)` when given (its buttons).
 * @param {Flavor[]} flavors
 * @param {((f: Flavor) => import("../js/dom.js").Child) | null} [actions]
 */
export function flavorTable(flavors, actions = null) {
  /** @type {import("../js/dom.js").Column<Flavor>[]} */
  const columns = [
      { title: "Name", field: "name", cell: (f) => link(flavorRoute(f.name), f.name) },
      { title: "vCPUs", field: "vcpus", cell: (f) => String(f.vcpus) },
      { title: "Memory", field: "memory", cell: (f) => memory(f.memory_mb) },
      { title: "Root disk", field: "disk", cell: (f) => (f.disk_mb ? memory(f.disk_mb) : "none") },
      { title: "Used by", field: "used_by", cell: (f) => `${f.used_by} VM${f.used_by === 1 ? "" : "s"}` },
      { title: "Properties", field: "properties", cell: (f) => propertiesLine(f.properties) },
      { title: "Description", field: "description", cell: (f) => f.description ?? "" },
  ];
  if (actions) columns.push({ title: "Actions", field: "actions", cell: actions });
  return table(
    columns,
    flavors,
    (f) => ({ dataset: { testid: "flavor-row", flavor: f.name } }),
    "No flavors yet.",
  );
}

/** @param {Flavor} f */
export function flavorFacts(f) {
  return facts([
    ["vCPUs", String(f.vcpus), "vcpus"],
    ["Memory", memory(f.memory_mb), "memory"],
    ["Root disk", f.disk_mb ? `${memory(f.disk_mb)} (vda)` : "none", "disk"],
    ["Description", f.description || null, "description"],
    ["Used by", `${f.used_by} VM${f.used_by === 1 ? "" : "s"} (as current flavor)`, "used_by"],
    ["Id", h("code", null, f.id), "id"],
    ["Created", when(f.created_at), "created_at"],
    ["Updated", when(f.updated_at), "updated_at"],
  ]);
}

/**
 * A flavor's properties, one row each.
 * @param {Record<string, string>} properties
 */
export function propertiesTable(properties) {
  const rows = Object.keys(properties ?? {})
    .sort()
    .map((k) => ({ key: k, value: properties[k] }));
  return table(
    [
      { title: "Key", field: "key", cell: (p) => h("code", null, p.key) },
      { title: "Value", field: "value", cell: (p) => p.value },
    ],
    rows,
    (p) => ({ dataset: { testid: "property-row", key: p.key } }),
    "No properties.",
  );
}
