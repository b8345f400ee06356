// @ts-check
/** The volume page's actions (permission volume.manage): attach (choose a VM), detach,
 * grow, copy, migrate (choose pool and node), snapshot, and delete; and on each snapshot
 * revert and delete. Only the actions the volume's state allows are drawn (the server checks
 * again); those that lose data ask first. Each change is a task: `started` names it. */
import { pathOf } from "../js/api.js";
import { h, replace } from "../js/dom.js";
import { memory } from "../js/format.js";
import { actionButton, confirmDialog } from "../js/ui.js";
import { actionForm, poolAndNode, sizeField, submit } from "./storage_forms.js";
import {
  attachable,
  deleteSnapshotText,
  deleteVolumeText,
  detachText,
  revertText,
  volumeActions,
} from "./storage_parts.js";
import { labelled, select } from "./vm_common.js";

/**
 * @typedef {import("../js/ui.js").Ctx} Ctx
 * @typedef {import("./storage_parts.js").Volume} Volume
 * @typedef {import("./storage_parts.js").Snapshot} Snapshot
 * @typedef {{volume: Volume, task: {id: string, type: string}}} Answer
 */

/**
 * What the buttons need of their page.
 * @typedef {object} Page
 * @property {HTMLElement} formBox where an action's form opens (one at a time)
 * @property {(what: string, answer: Answer) => Promise<void>} started after a change was accepted
 * @property {() => void} deleted after the volume's deletion was accepted
 */

const PERMISSION = "volume.manage";

/**
 * A name for a new snapshot from the time: "snap-20260105-142233".
 * @param {Date} date
 */
export function snapshotName(date) {
  const p = (/** @type {number} */ n) => String(n).padStart(2, "0");
  const day = `${date.getFullYear()}${p(date.getMonth() + 1)}${p(date.getDate())}`;
  return `snap-${day}-${p(date.getHours())}${p(date.getMinutes())}${p(date.getSeconds())}`;
}

/**
 * The volume's action buttons.
 * @param {Ctx} ctx
 * @param {Volume} volume
 * @param {Page} page
 * @returns {(HTMLElement | null)[]}
 */
export function volumeButtons(ctx, volume, page) {
  const name = volume.name;
  const path = pathOf("volumes", name);
  const can = volumeActions(volume);
  /**
   * A button that opens a form in the page's form box (or closes it, when it is open).
   * @param {string} action
   * @param {string} label
   * @param {(close: () => void) => Promise<{form: HTMLElement, focus: () => void}>} build
   */
  const opener = (action, label, build) => {
    const button = actionButton(ctx, PERMISSION, action, label, async () => {
      const open = closeForm(page.formBox);
      if (open === action) return;
      const close = () => {
        closeForm(page.formBox);
        button?.focus();
      };
      const { form, focus } = await build(close);
      replace(page.formBox, form);
      page.formBox.dataset.open = action;
      button?.setAttribute("aria-expanded", "true");
      focus();
    }, { "aria-expanded": "false" });
    return button;
  };
  return [
    can.has("attach") ? opener("volume-attach", "Attach…", (close) => attachForm(ctx, volume, page, close)) : null,
    can.has("detach")
      ? actionButton(ctx, PERMISSION, "volume-detach", "Detach", async () => {
          if (!(await confirmDialog(`Detach ${name}?`, detachText(name, volume.vm ?? "its VM"), "Detach"))) return;
          await page.started(`Detaching ${name} from ${volume.vm}`, await ctx.api.post(`${path}/detach`, {}));
        })
      : null,
    can.has("grow") ? opener("volume-grow", "Grow…", async (close) => growForm(ctx, volume, page, close)) : null,
    can.has("snapshot") ? opener("snapshot-create", "Take snapshot…", async (close) => snapshotForm(ctx, volume, page, close)) : null,
    can.has("copy") ? opener("volume-copy", "Copy…", (close) => moveForm(ctx, volume, page, close, "copy")) : null,
    can.has("migrate") ? opener("volume-migrate", "Migrate…", (close) => moveForm(ctx, volume, page, close, "migrate")) : null,
    can.has("delete")
      ? actionButton(
          ctx,
          PERMISSION,
          "volume-delete",
          "Delete",
          async () => {
            if (!(await confirmDialog(`Delete ${name}?`, deleteVolumeText(name), "Delete"))) return;
            await ctx.api.del(path);
            page.deleted();
          },
          { class: "action danger" },
        )
      : null,
  ];
}

/**
 * Close the form open in `box`, if any; returns the action whose form it was.
 * @param {HTMLElement} box
 */
function closeForm(box) {
  const open = box.dataset.open;
  replace(box);
  delete box.dataset.open;
  if (open) document.querySelector(`[data-action="${open}"]`)?.setAttribute("aria-expanded", "false");
  return open;
}

/**
 * A snapshot's buttons: revert (the volume detached) and delete.
 * @param {Ctx} ctx
 * @param {Volume} volume
 * @param {Snapshot} snapshot
 * @param {Page} page
 * @returns {(HTMLElement | null)[]}
 */
export function snapshotButtons(ctx, volume, snapshot, page) {
  const can = volumeActions(volume);
  const path = `${pathOf("volumes", volume.name)}/snapshots/${encodeURIComponent(snapshot.name)}`;
  return [
    can.has("revert")
      ? actionButton(ctx, PERMISSION, "snapshot-revert", "Revert", async () => {
          const ok = await confirmDialog(`Revert ${volume.name}?`, revertText(volume.name, snapshot.name), "Revert");
          if (!ok) return;
          await page.started(`Reverting ${volume.name} to ${snapshot.name}`, await ctx.api.post(`${path}/revert`, {}));
        })
      : null,
    can.has("snapshot-delete")
      ? actionButton(
          ctx,
          PERMISSION,
          "snapshot-delete",
          "Delete",
          async () => {
            const ok = await confirmDialog(`Delete snapshot ${snapshot.name}?`, deleteSnapshotText(volume.name, snapshot.name), "Delete");
            if (!ok) return;
            await page.started(`Deleting snapshot ${snapshot.name} of ${volume.name}`, await ctx.api.del(path));
          },
          { class: "action danger" },
        )
      : null,
  ];
}

/**
 * Attach: a VM it can be attached to (on its node, for a local pool's volume) and an
 * optional device.
 * @param {Ctx} ctx
 * @param {Volume} volume
 * @param {Page} page
 * @param {() => void} close
 */
async function attachForm(ctx, volume, page, close) {
  const vms = attachable(await ctx.api.all("/vms"), volume);
  const vm = select("vm", vms.map((v) => [v.name, `${v.name} (${v.status}${v.node ? ` on ${v.node}` : ""})`]), vms[0]?.name ?? "");
  vm.dataset.testid = "attach-vm";
  const device = h("input", { type: "text", name: "device", autocomplete: "off", placeholder: "vdb", maxlength: 8, "data-testid": "attach-device" });
  const where = volume.pool_type === "local" ? `VMs on ${volume.node ?? "its node"} (a local pool's volume is on that host only)` : "every VM";
  const form = actionForm(
    ctx,
    { testid: "attach-form", title: `Attach ${volume.name}`, permission: PERMISSION, action: "volume-attach-submit", label: "Attach" },
    [
      labelled("vm", "VM", vm, `Offered: ${where}.`),
      labelled("device", "Device", device, "Optional: the VM's next free device (vdb, vdc, …) when left empty."),
      vms.length === 0 ? h("p", { class: "muted", "data-testid": "attach-none" }, "No VM can take it now.") : null,
    ].filter((e) => e !== null),
    async (f) => {
      const body = { vm: /** @type {HTMLSelectElement} */ (vm).value, device: /** @type {HTMLInputElement} */ (device).value.trim() || null };
      const answer = await submit(ctx, f, `${pathOf("volumes", volume.name)}/attach`, body);
      close();
      await page.started(`Attaching ${volume.name} to ${body.vm}`, answer);
    },
    close,
  );
  if (vms.length === 0) form.querySelector("[data-action=volume-attach-submit]")?.setAttribute("disabled", "");
  return { form, focus: () => vm.focus() };
}

/**
 * Grow: a new size, bigger than the one it has.
 * @param {Ctx} ctx
 * @param {Volume} volume
 * @param {Page} page
 * @param {() => void} close
 */
function growForm(ctx, volume, page, close) {
  const size = sizeField("size_mb", "New size", volume.size_mb);
  const form = actionForm(
    ctx,
    { testid: "grow-form", title: `Grow ${volume.name}`, permission: PERMISSION, action: "volume-grow-submit", label: "Grow" },
    [
      size.root,
      h("p", { class: "muted" }, `It has ${memory(volume.size_mb)}; volumes only grow. The guest sees the new size at once; its file system grows when the guest grows it.`),
    ],
    async (f) => {
      const answer = await submit(ctx, f, `${pathOf("volumes", volume.name)}/grow`, { size_mb: size.value() });
      close();
      await page.started(`Growing ${volume.name}`, answer);
    },
    close,
  );
  const input = /** @type {HTMLInputElement} */ (form.querySelector("input[name=size_mb]"));
  return { form, focus: () => input.select() };
}

/**
 * Take a snapshot: its name (one from the time is offered).
 * @param {Ctx} ctx
 * @param {Volume} volume
 * @param {Page} page
 * @param {() => void} close
 */
function snapshotForm(ctx, volume, page, close) {
  const name = h("input", {
    type: "text",
    name: "name",
    autocomplete: "off",
    spellcheck: "false",
    maxlength: 63,
    value: snapshotName(new Date()),
    "data-testid": "snapshot-name",
  });
  const form = actionForm(
    ctx,
    { testid: "snapshot-form", title: `Take a snapshot of ${volume.name}`, permission: PERMISSION, action: "snapshot-create-submit", label: "Take snapshot" },
    [labelled("name", "Name", name, "Letters, digits, '.', '_' and '-'.")],
    async (f) => {
      const snap = /** @type {HTMLInputElement} */ (name).value.trim();
      const answer = await submit(ctx, f, `${pathOf("volumes", volume.name)}/snapshots`, { name: snap });
      close();
      await page.started(`Taking snapshot ${snap} of ${volume.name}`, answer);
    },
    close,
  );
  return { form, focus: () => /** @type {HTMLInputElement} */ (name).select() };
}

/**
 * Copy (a new volume: its name, pool and node) or migrate (the same volume to another pool
 * or node).
 * @param {Ctx} ctx
 * @param {Volume} volume
 * @param {Page} page
 * @param {() => void} close
 * @param {"copy" | "migrate"} kind
 */
async function moveForm(ctx, volume, page, close, kind) {
  const [pools, nodes] = await Promise.all([ctx.api.all("/pools"), ctx.api.all("/nodes")]);
  const where = poolAndNode(pools, nodes.map((/** @type {any} */ n) => String(n.name)), {
    current: volume.pool,
    help: kind === "copy" ? "Where the copy goes." : "Where it goes; another node of a local pool moves it to that host.",
  });
  const name = h("input", { type: "text", name: "name", autocomplete: "off", spellcheck: "false", maxlength: 63, value: `${volume.name}-copy` });
  const copy = kind === "copy";
  const form = actionForm(
    ctx,
    copy
      ? { testid: "copy-form", title: `Copy ${volume.name}`, permission: PERMISSION, action: "volume-copy-submit", label: "Copy" }
      : { testid: "migrate-volume-form", title: `Migrate ${volume.name}`, permission: PERMISSION, action: "volume-migrate-submit", label: "Migrate" },
    [
      copy ? labelled("name", "New volume's name", name) : null,
      where.root,
      copy
        ? h("p", { class: "muted" }, "A new volume with the same data; this one stays as it is.")
        : h("p", { class: "muted" }, volume.vm ? `It stays attached to ${volume.vm}: its data is copied while the VM runs, then the VM switches to the new copy.` : "Its data is copied, then the old file is removed."),
    ].flat().filter((e) => e !== null),
    async (f) => {
      const path = `${pathOf("volumes", volume.name)}/${kind}`;
      if (copy) {
        const body = { name: /** @type {HTMLInputElement} */ (name).value.trim(), ...where.value() };
        const answer = await submit(ctx, f, path, body);
        close();
        await page.started(`Copying ${volume.name} to ${answer?.volume?.name ?? body.name}`, answer);
      } else {
        const answer = await submit(ctx, f, path, where.value());
        close();
        await page.started(`Migrating ${volume.name}`, answer);
      }
    },
    close,
  );
  const first = /** @type {HTMLElement} */ (form.querySelector("input, select"));
  return { form, focus: () => first.focus() };
}
