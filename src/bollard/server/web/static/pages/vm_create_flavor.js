// @ts-check
/** The size part of the create-VM form: a flavor (from `GET /flavors`) or vCPUs and memory
 * typed by hand, and, for a flavor with a root disk, the pool of that disk (vda; the form's
 * other disks then follow it from vdb). */
import { h } from "../js/dom.js";
import { flavorOption, flavorSize } from "./flavor_parts.js";
import { labelled, select } from "./vm_common.js";
import { DEFAULT_POOL, poolOptions } from "./vm_create_parts.js";

/**
 * @typedef {import("./flavor_parts.js").Flavor} Flavor
 * @typedef {import("./vm_create_parts.js").PoolChoice} PoolChoice
 */

/**
 * The size fields of the request body: `{flavor, root_pool?}` for a flavor (the API refuses
 * a flavor given with vCPUs or memory), else `{vcpus, memory_mb}` as typed.
 * @param {string} flavor "" for a size by hand
 * @param {string} rootPool "" for the server's default
 * @param {number | undefined} vcpus
 * @param {number | undefined} memoryMb
 * @returns {{flavor?: string, root_pool?: string, vcpus?: number, memory_mb?: number}}
 */
export function sizeBody(flavor, rootPool, vcpus, memoryMb) {
  if (flavor) return rootPool ? { flavor, root_pool: rootPool } : { flavor };
  return { vcpus, memory_mb: memoryMb };
}

/**
 * The flavor select's options: a size by hand first (the default), then every flavor.
 * @param {Flavor[]} flavors
 * @returns {[string, string][]}
 */
export function flavorOptions(flavors) {
  return [["", "none: vCPUs and memory typed below"], ...flavors.map((f) => /** @type {[string, string]} */ ([f.name, flavorOption(f)]))];
}

/**
 * The flavor select, the root disk's pool (shown for a flavor with a root disk), and a note
 * of what the flavor gives. `changed(flavor)` is called when the choice changes (null: by
 * hand), for the form to hide its vCPU and memory fields and renumber its disks.
 * @param {Flavor[]} flavors
 * @param {PoolChoice[]} pools
 * @param {string | null} unreadable why the flavors could not be read, if so
 * @param {(flavor: Flavor | null) => void} changed
 */
export function flavorChoice(flavors, pools, unreadable, changed) {
  const flavor = select("flavor", flavorOptions(flavors), "");
  flavor.dataset.testid = "create-flavor";
  const options = pools.length > 0 ? poolOptions(pools) : [[DEFAULT_POOL, DEFAULT_POOL]];
  const rootPool = select("root_pool", [["", `the default (${DEFAULT_POOL})`], .../** @type {[string, string][]} */ (options)], "");
  const rootField = labelled("root_pool", "Root disk pool", rootPool, "Where the flavor's root disk (vda) is made.");
  const note = h("p", { class: "muted", "aria-live": "polite", "data-testid": "create-flavor-note" });
  const chosen = () => flavors.find((f) => f.name === /** @type {HTMLSelectElement} */ (flavor).value) ?? null;
  const show = () => {
    const f = chosen();
    rootField.hidden = !f || !f.disk_mb;
    note.textContent = f ? `${f.name}: ${flavorSize(f)}.` : unreadable ? `No flavor to choose: ${unreadable}` : "";
    changed(f);
  };
  flavor.addEventListener("change", show);
  const help = flavors.length === 0 && !unreadable ? "No flavor exists yet (an admin makes them on the Flavors page)." : "A named size, or none to type vCPUs and memory.";
  return {
    root: [labelled("flavor", "Flavor", flavor, help), note, rootField],
    /** Draw the state of the first choice (call once the form is built). */
    start: show,
    /** The chosen flavor's name ("" for a size by hand) and root pool ("": the default). */
    value() {
      return { flavor: chosen()?.name ?? "", rootPool: /** @type {HTMLSelectElement} */ (rootPool).value };
    },
  };
}
