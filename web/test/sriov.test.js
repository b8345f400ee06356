// Unit tests of the node page's SR-IOV part (static/pages/node_sriov.js): its pure helpers,
// and the section drawn into the fake DOM (web/fakes/browser.js) with a fake API: the PFs and
// VFs with their holders, and the form that changes a VF. `node --test web/test/`.
import assert from "node:assert/strict";
import { beforeEach, describe, test } from "node:test";

import { column, errorBar, fakeCtx, fakeDocument, fill, resetShell, settle } from "../fakes/browser.js";

const { ApiError } = await import("../../src/bollard/server/web/static/js/api.js");
const sriov = await import("../../src/bollard/server/web/static/pages/node_sriov.js");

const NONE = { mtu: null, mac: null, vlan: null, qos: null, min_tx_rate: null, max_tx_rate: null, spoof_check: null, link_state: null, trust: null, query_rss: null };

/** A VF as GET /nodes/{name}/sriov gives it. @param {number} index @param {Record<string, any>} over */
const vf = (index, over = {}) => ({
  index,
  pci: `0000:03:10.${index}`,
  netdev: `ens1f0v${index}`,
  settings: { ...NONE },
  applied: { ...NONE },
  differs: [],
  used_by: null,
  mac: null,
  claim_pending: false,
  claim_task: null,
  claimed_at: null,
  host_used_by: null,
  ...over,
});
/** @param {Record<string, any>} over */
const node = (over = {}) => ({
  node: "node1",
  connected: true,
  pfs: [
    {
      device: "ens1f0",
      physnet: "phys1",
      pci: "0000:03:00.0",
      mtu: 9000,
      vfs_total: 8,
      free: 1,
      updated_at: "2026-01-01T00:00:00Z",
      vfs: [
        vf(0, { used_by: { name: "web1", uuid: "u1" }, mac: "52:54:00:ab:cd:ef", applied: { ...NONE, vlan: 100, trust: true } }),
        vf(1, { used_by: { name: null, uuid: "u-gone" }, claim_pending: true, claim_task: "t9" }),
        vf(2, { settings: { ...NONE, vlan: 7 }, differs: ["vlan"] }),
      ],
    },
  ],
  ...over,
});

describe("SR-IOV helpers", () => {
  test("a setting as the host reports it, and what Bollard set when it differs", () => {
    const [held, , drift] = node().pfs[0].vfs;
    assert.equal(sriov.settingText(held, "vlan"), "100");
    assert.equal(sriov.settingText(held, "trust"), "on");
    assert.equal(sriov.settingText(held, "link_state"), "–");
    assert.equal(sriov.settingText(drift, "vlan"), "– (set 7)");
  });
  test("holders: the VM's name, else its uuid; a pending claim says so", () => {
    const [held, pending, free] = node().pfs[0].vfs;
    assert.equal(sriov.holderText(held), "web1");
    assert.equal(sriov.holderText(pending), "u-gone (claim pending)");
    assert.equal(sriov.holderText(free), "–");
  });
  test("a PF's line", () => {
    assert.equal(sriov.pfLine(node().pfs[0]), "ens1f0 on phys1 (0000:03:00.0, MTU 9000): 3 VFs of 8 possible, 1 free");
    assert.equal(sriov.pfLine({ ...node().pfs[0], pci: "", mtu: null, vfs: [] }), "ens1f0 on phys1 (no PCI address): 0 VFs of 8 possible, 1 free");
  });
  test("changeBody: only what is filled in; numbers, booleans, link state; not-numbers named", () => {
    assert.deepEqual(sriov.changeBody({ vlan: " 100 ", qos: "", trust: "on", spoof_check: "off", query_rss: "", link_state: "disable", mac: "" }), {
      body: { vlan: 100, trust: true, spoof_check: false, link_state: "disable" },
      errors: [],
    });
    assert.deepEqual(sriov.changeBody({}), { body: {}, errors: [] });
    // Ranges are the API's to judge: -1 goes through as a number.
    assert.deepEqual(sriov.changeBody({ min_tx_rate: "-1", mac: " 52:54:00:aa:bb:cc " }).body, { min_tx_rate: -1, mac: "52:54:00:aa:bb:cc" });
    assert.deepEqual(sriov.changeBody({ vlan: "ten", mtu: "1.5", link_state: "up" }), {
      body: {},
      errors: ['VLAN: "ten" is not a whole number', 'MTU: "1.5" is not a whole number'],
    });
    assert.equal(sriov.changeText({ vlan: 100, trust: true, max_tx_rate: 5 }), "vlan=100 trust=on max-tx-rate=5");
  });
});

describe("the node page's SR-IOV section", () => {
  beforeEach(() => resetShell());

  test("each VF with its settings and holder; a node without PFs, and an older server, say so", () => {
    const { ctx } = fakeCtx({});
    const section = sriov.nodeSriovSection(ctx, "node1", fakeDocument.createElement("p"), async () => {});
    section.update(node());
    assert.equal(section.root.querySelector("h3[data-pf=ens1f0]").textContent, sriov.pfLine(node().pfs[0]));
    assert.deepEqual(column(section.root, "pci"), ["0000:03:10.0", "0000:03:10.1", "0000:03:10.2"]);
    assert.deepEqual(column(section.root, "vlan"), ["100", "–", "– (set 7)"]);
    assert.deepEqual(column(section.root, "mac"), ["52:54:00:ab:cd:ef", "–", "–"]);
    assert.deepEqual(column(section.root, "used_by"), ["web1", "u-gone (claim pending)", "–"]);
    assert.equal(section.root.querySelector("td[data-field=used_by] a").getAttribute("href"), "#/vms/web1");
    assert.equal(section.root.querySelectorAll("[data-action=vf-set]").length, 3);

    section.update(node({ connected: false }));
    assert.equal(section.root.querySelectorAll("[data-action=vf-set]").length, 0);
    assert.match(section.root.textContent, /node1 is not connected/);
    section.update(node({ pfs: [] }));
    assert.match(section.root.textContent, /node1 has no SR-IOV PF/);
    section.update(null);
    assert.match(section.root.textContent, /does not report SR-IOV/);
  });

  test("without permission node.sriov there is no Set button", () => {
    const { ctx } = fakeCtx({}, { can: (action) => action !== sriov.SRIOV_PERMISSION });
    const section = sriov.nodeSriovSection(ctx, "node1", fakeDocument.createElement("p"), async () => {});
    section.update(node());
    assert.equal(section.root.querySelectorAll("[data-action=vf-set]").length, 0);
  });

  test("the form sends only what is filled in and names the task started", async () => {
    const { ctx, calls } = fakeCtx({
      "PATCH /nodes/node1/sriov/ens1f0/vfs/2": { id: "t1", type: "vf_set" },
      "GET /nodes/node1/sriov": node(),
    });
    const result = fakeDocument.createElement("p");
    let refreshed = 0;
    const section = sriov.nodeSriovSection(ctx, "node1", result, async () => void (refreshed += 1));
    section.update(node());
    section.root.querySelectorAll("[data-action=vf-set]")[2].click();
    await settle();
    const form = section.root.querySelector("[data-testid=vf-set-form]");
    assert.ok(form, "the form opened");
    assert.match(form.textContent, /Set ens1f0 VF 2 on node1/);
    fill(form, "vlan", "100");
    fill(form, "trust", "on");
    fill(form, "link_state", "enable");
    // A refresh meanwhile keeps the form and what was typed.
    section.update(node({ connected: true, pfs: [{ ...node().pfs[0], free: 0 }] }));
    assert.equal(section.root.querySelector("[data-testid=vf-set-form] [name=vlan]").value, "100");
    form.querySelector("[data-action=vf-set-submit]").click();
    await settle();
    assert.deepEqual(calls, [{ method: "PATCH", path: "/nodes/node1/sriov/ens1f0/vfs/2", body: { vlan: 100, trust: true, link_state: "enable" } }]);
    assert.equal(result.textContent, "ens1f0 VF 2 of node1: vlan=100 trust=on link-state=enable: task t1 started.");
    assert.equal(refreshed, 1);
    assert.equal(section.root.querySelector("[data-testid=vf-set-form]"), null);
  });

  test("nothing filled in, a bad number, or the API's refusal: one line in the error bar", async () => {
    const { ctx, calls } = fakeCtx({
      "PATCH /nodes/node1/sriov/ens1f0/vfs/0": new ApiError(422, "vlan 5000: must be between 0 and 4094", "invalid-input"),
    });
    const section = sriov.nodeSriovSection(ctx, "node1", fakeDocument.createElement("p"), async () => {});
    section.update(node());
    section.root.querySelector("[data-action=vf-set]").click();
    await settle();
    const form = section.root.querySelector("[data-testid=vf-set-form]");
    const submit = () => form.querySelector("[data-action=vf-set-submit]").click();
    submit();
    await settle();
    assert.equal(errorBar(), "Nothing to change: fill in at least one setting.");
    fill(form, "vlan", "ten");
    submit();
    await settle();
    assert.equal(errorBar(), 'VLAN: "ten" is not a whole number');
    assert.equal(calls.length, 0);
    fill(form, "vlan", "5000");
    submit();
    await settle();
    assert.equal(errorBar(), "vlan 5000: must be between 0 and 4094");
    assert.equal(calls.length, 1);
    assert.ok(section.root.querySelector("[data-testid=vf-set-form]"), "the form stays open");
    form.querySelector("[data-testid=vf-set-form-cancel]").click();
    assert.equal(section.root.querySelector("[data-testid=vf-set-form]"), null);
  });

  test("loadSriov: a server without the route is null, any other failure the page's", async () => {
    const missing = fakeCtx({ "GET /nodes/node1/sriov": new ApiError(404, "no route", "not-found") });
    assert.equal(await sriov.loadSriov(missing.ctx, "node1"), null);
    const broken = fakeCtx({ "GET /nodes/node1/sriov": new ApiError(500, "boom", "internal") });
    await assert.rejects(sriov.loadSriov(broken.ctx, "node1"), /boom/);
    const ok = fakeCtx({ "GET /nodes/node1/sriov": node() });
    assert.deepEqual(await sriov.loadSriov(ok.ctx, "node1"), node());
  });
});

describe("VM NICs on SR-IOV (the VM page and the create form)", () => {
  beforeEach(() => resetShell());

  test("the VM page names a NIC's physical network and mode", async () => {
    const { nicAttachment } = await import("../../src/bollard/server/web/static/pages/vm_parts.js");
    assert.equal(nicAttachment({ sriov: "physnet1", mode: "hostdev" }), "SR-IOV physnet1 (hostdev)");
    assert.equal(nicAttachment({ sriov: "physnet1", mode: null }), "SR-IOV physnet1 (macvtap)");
    assert.equal(nicAttachment({ network: "default" }), "network default");
    assert.equal(nicAttachment({ bridge: "br0" }), "bridge br0");
  });

  test("the create form sends an SR-IOV NIC with its mode, and the mode only for one", async () => {
    const { nicList } = await import("../../src/bollard/server/web/static/pages/vm_create_parts.js");
    const nics = nicList();
    const add = nics.root.querySelector("[data-testid=nics-add]");
    add.click();
    add.click();
    const [first, second] = nics.root.querySelectorAll("[data-key=on]");
    const mode = nics.root.querySelectorAll("[data-key=mode]");
    assert.ok(mode[0].closest(".cell").hidden, "the mode is hidden for a bridge NIC");
    first.value = "sriov";
    first.dispatch("change"); // (the fake DOM's event)
    assert.ok(!mode[0].closest(".cell").hidden, "the mode shows for an SR-IOV NIC");
    nics.root.querySelector("[data-key=sriov]").value = "physnet1";
    mode[0].value = "hostdev";
    second.value = "bridge";
    nics.root.querySelectorAll("[data-key=bridge]")[0].value = "br0";
    assert.deepEqual(nics.value(), [
      { sriov: "physnet1", model: "virtio", mode: "hostdev" },
      { bridge: "br0", model: "virtio" },
    ]);
  });
});
