// @ts-check
/** `#/vms/new`: the create-VM form (name, a flavor or vCPUs and memory by hand, the flavor's
 * root disk pool, disks and their pools, NICs, start now, the cell (through an API server),
 * node, placement and recovery settings), as `bollard vm create` takes them. The form does
 * not judge the values itself: the API does, and its message is shown as one line and each
 * part of it next to the field it names. On success: the new VM's page; with a count over 1
 * (`POST /vms/batch`: NAME-1 … NAME-N, all or none), the list of the VMs created. */
import { ApiError } from "../js/api.js";
import { h, link, replace } from "../js/dom.js";
import { memory } from "../js/format.js";
import { actionButton, messageOf } from "../js/ui.js";
import { isPartial, listCells } from "./cell_parts.js";
import { cellField } from "./vm_create_cell.js";
import { flavorChoice, sizeBody } from "./vm_create_flavor.js";
import { diskList, nicList, numberOf } from "./vm_create_parts.js";
import { fieldErrors, labelled, select, showFieldErrors, vmRoute } from "./vm_common.js";
import { metaControls } from "./vm_meta.js";

/**
 * @param {import("../js/ui.js").Ctx} ctx
 */
export async function render(ctx) {
  if (!ctx.can("vm.create")) {
    replace(
      ctx.view,
      h(
        "div",
        { class: "vm-page" },
        h("h1", null, "Create a VM"),
        h("p", { "data-testid": "not-allowed" }, `Your role (${ctx.me.role}) may not create VMs.`),
      ),
    );
    return;
  }
  /** @type {string | null} why the flavors could not be read (the form works without them) */
  let unreadable = null;
  const [all, pools, flavors, cells] = await Promise.all([
    ctx.api.all("/nodes"),
    ctx.api.all("/pools"),
    ctx.api.all("/flavors").catch((/** @type {unknown} */ err) => {
      unreadable = messageOf(err);
      return [];
    }),
    // (null: no cells, a plain server; the form works without the choice)
    listCells(ctx.api).catch((/** @type {unknown} */ err) => {
      console.warn("the cells could not be read", err);
      return null;
    }),
  ]);
  // A node of a cell that did not answer can take no VM (and has no free memory to show).
  const nodes = all.filter((/** @type {any} */ n) => !isPartial(n));
  const names = nodes.map((/** @type {any} */ n) => String(n.name));

  const name = h("input", { type: "text", name: "name", autocomplete: "off", spellcheck: "false", maxlength: 63 });
  const vcpus = h("input", { type: "number", name: "vcpus", value: 1, min: 1, max: 1024, step: 1 });
  const mem = h("input", { type: "number", name: "memory_mb", value: 1024, min: 16, step: 1 });
  const memHint = h("small", { class: "muted", "aria-live": "polite" });
  const showMemory = () => {
    const n = numberOf(/** @type {HTMLInputElement} */ (mem));
    memHint.textContent = n === undefined ? "MiB" : `MiB (${memory(n)})`;
  };
  mem.addEventListener("input", showMemory);
  showMemory();
  const node = select(
    "node",
    [
      ["", "the scheduler chooses"],
      ...nodes.map((/** @type {any} */ n) => /** @type {[string, string]} */ ([
        n.name,
        `${n.name} (${n.health}, ${n.scheduling}, ${memory(n.free.memory_mb)} free${n.connected ? "" : ", not connected"})`,
      ])),
    ],
    "",
  );
  const start = h("input", { type: "checkbox", name: "start", id: "f-start", checked: true });
  const count = h("input", { type: "number", name: "count", value: 1, min: 1, max: 100, step: 1 });
  const cell = cells === null ? null : cellField(cells, node, nodes);
  const disks = diskList(pools);
  const byHand = h("div", { class: "pair", "data-testid": "create-by-hand" }, labelled("vcpus", "vCPUs", vcpus), h("div", null, labelled("memory_mb", "Memory", mem), memHint));
  const disksNote = h("p", { class: "muted", "data-testid": "create-disks-note", hidden: true }, "The flavor makes the root disk vda: these follow it.");
  const size = flavorChoice(flavors, pools, unreadable, (f) => {
    byHand.hidden = f !== null;
    const root = f !== null && f.disk_mb > 0;
    disksNote.hidden = !root;
    disks.startAt(root ? 1 : 0);
  });
  const nics = nicList();
  const meta = metaControls(names);

  const form = h(
    "form",
    { class: "stack vm-create", novalidate: true, "aria-labelledby": "create-title", "data-testid": "vm-create-form" },
    labelled("name", "Name", name, "Letters, digits, '.', '_' and '-', starting with a letter or digit."),
    size.root,
    byHand,
    h(
      "fieldset",
      null,
      h("legend", null, "Disks"),
      h(
        "p",
        { class: "muted" },
        "Disks vda, vdb, …, each a new, empty volume in a pool (see Pools). In a local pool " +
          "(such as local) it lives on the VM's node and moves with migrations, but an HA " +
          "restart on another node after a fence gives it a new, EMPTY disk. In a shared pool " +
          "every node of the pool reaches it: an HA restart keeps its data.",
      ),
      disksNote,
      disks.root,
    ),
    h(
      "fieldset",
      null,
      h("legend", null, "Network interfaces"),
      h("p", { class: "muted" }, "Each on a host bridge or a hypervisor network; each keeps its MAC for the VM's life."),
      nics.root,
    ),
    cell?.root,
    labelled("node", "Node", node, "Where to place it (it must be connected and have room)."),
    labelled(
      "count",
      "Count",
      count,
      "More than 1: that many VMs alike (at most 100), named NAME-1 … NAME-N, all created or none " +
        "(a NIC with a given MAC is refused).",
    ),
    h("label", { class: "check", for: "f-start" }, start, "Start it once created"),
    h("details", null, h("summary", null, "Placement and recovery"), meta.root),
  );

  const submit = actionButton(
    ctx,
    "vm.create",
    "vm-create",
    "Create VM",
    async () => {
      const body = {
        name: /** @type {HTMLInputElement} */ (name).value.trim(),
        ...sizeBody(
          size.value().flavor,
          size.value().rootPool,
          numberOf(/** @type {HTMLInputElement} */ (vcpus)),
          numberOf(/** @type {HTMLInputElement} */ (mem)),
        ),
        start: /** @type {HTMLInputElement} */ (start).checked,
        disks: disks.value(),
        nics: nics.value(),
        ...meta.values(),
      };
      const wanted = /** @type {HTMLSelectElement} */ (node).value;
      if (wanted) Object.assign(body, { node: wanted });
      if (cell?.value()) Object.assign(body, { cell: cell.value() });
      // More than one (or out of range, for the API to name the field): a batch.
      const many = numberOf(/** @type {HTMLInputElement} */ (count)) ?? 1;
      const batch = many !== 1;
      if (batch) Object.assign(body, { count: many });
      showFieldErrors(form, []);
      let answer;
      try {
        answer = await ctx.api.post(batch ? "/vms/batch" : "/vms", body);
      } catch (err) {
        if (err instanceof ApiError) {
          const placed = showFieldErrors(form, fieldErrors(err.message));
          // Open the fold that holds a field in error, so it can be seen.
          if (placed > 0) {
            for (const slot of form.querySelectorAll(".field-error:not([hidden])")) {
              const fold = slot.closest("details");
              if (fold) fold.open = true;
            }
          }
        }
        throw err;
      }
      if (batch) {
        showCreated(ctx, answer.items);
        return;
      }
      ctx.go(vmRoute(answer.vm.name));
    },
    { type: "submit", class: "action primary" },
  );
  form.append(h("div", { class: "toolbar" }, submit, link("#/vms", "Cancel")));
  // Enter in a field submits through the button (which shows the API's answer).
  form.addEventListener("submit", (e) => e.preventDefault());

  size.start();
  replace(ctx.view, h("div", { class: "vm-page" }, h("h1", { id: "create-title" }, "Create a VM"), form));
  name.focus();
}

/**
 * The VMs of a batch just created, each a link to its page, with its node and its task.
 * @param {import("../js/ui.js").Ctx} ctx
 * @param {any[]} items `{vm, task}` of each VM, NAME-1 first
 */
function showCreated(ctx, items) {
  replace(
    ctx.view,
    h(
      "div",
      { class: "vm-page" },
      h("h1", { id: "created-title" }, `${items.length} VMs created`),
      h("p", { class: "muted" }, "Each is being built by its create task: its page shows how it goes."),
      h(
        "ul",
        { "data-testid": "batch-created", "aria-labelledby": "created-title" },
        ...items.map((/** @type {any} */ item) =>
          h(
            "li",
            null,
            link(vmRoute(item.vm.name), item.vm.name),
            ` on ${item.vm.node ?? "no node yet"}, task ${item.task.id} (${item.task.state})`,
          ),
        ),
      ),
      h("div", { class: "toolbar" }, link("#/vms", "All VMs"), link("#/vms/new", "Create more")),
    ),
  );
}
