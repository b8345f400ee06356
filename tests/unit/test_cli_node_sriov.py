"""`bollard node sriov` and `bollard node vf set` against an in-memory fake of
/api/v1/nodes/{name}/sriov: the requests sent, the table and -o json, bad input refused
before any request, and the server's refusals as one line."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from bollard.cli import client as client_mod
from tests.unit.cli_api19 import TOKEN, flat, one_line_error, run

NOW = "2026-03-01T10:00:00Z"
NO_SETTINGS = dict.fromkeys(
    ("mtu", "mac", "vlan", "qos", "min_tx_rate", "max_tx_rate", "spoof_check", "link_state",
     "trust", "query_rss"),
)  # fmt: skip


def _err(status: int, code: str, message: str) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": message}})


def vf(index: int, **fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "index": index, "pci": f"0000:03:10.{index}", "netdev": f"ens1f0v{index}",
        "settings": dict(NO_SETTINGS), "applied": dict(NO_SETTINGS), "differs": [],
        "used_by": None, "mac": None, "claim_pending": False, "claim_task": None,
        "claimed_at": None, "host_used_by": None,
    }  # fmt: skip
    out.update(fields)
    return out


class SriovApi:
    """One node `node1` with PF ens1f0 (phys1) and its VFs; a PATCH answers a pending task,
    which a wait ends as `outcome` says."""

    def __init__(self) -> None:
        self.connected = True
        self.vfs = [
            vf(0, used_by={"name": "web1", "uuid": "u-web1"}, mac="52:54:00:ab:cd:ef",
               applied={**NO_SETTINGS, "vlan": 100, "trust": True, "link_state": "auto"}),
            vf(1, used_by={"name": "db1", "uuid": "u-db1"}, claim_pending=True, claim_task="t-9"),
            vf(2, settings={**NO_SETTINGS, "vlan": 7}, differs=["vlan"]),
        ]  # fmt: skip
        self.requests: list[httpx.Request] = []
        self.outcome: tuple[str, str | None] = ("succeeded", None)

    def sent(self) -> list[tuple[str, str, Any]]:
        return [
            (r.method, r.url.path.removeprefix("/api/v1"), json.loads(r.content or b"null"))
            for r in self.requests
            if "/tasks/" not in r.url.path
        ]

    def body(self) -> dict[str, Any]:
        return {"node": "node1", "connected": self.connected, "pfs": [{
            "device": "ens1f0", "physnet": "phys1", "pci": "0000:03:00.0", "mtu": 9000,
            "vfs_total": 8, "free": 1, "updated_at": NOW, "vfs": self.vfs,
        }]}  # fmt: skip

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return _err(401, "unauthorized", "invalid token")
        path, method = request.url.path.removeprefix("/api/v1"), request.method
        if path == "/nodes/node1/sriov" and method == "GET":
            return httpx.Response(200, json=self.body())
        if path == "/nodes/empty/sriov":
            return httpx.Response(200, json={"node": "empty", "connected": True, "pfs": []})
        if m := re.fullmatch(r"/nodes/node1/sriov/([^/]+)/vfs/(\d+)", path):
            if m.group(1) != "ens1f0":
                return _err(404, "not-found", f"node node1 has no SR-IOV PF {m.group(1)!r}")
            if not self.connected:
                return _err(409, "node-unavailable", "node node1 is not connected")
            task = self._task("pending", json.loads(request.content), int(m.group(2)))
            return httpx.Response(202, json=task)
        if m := re.fullmatch(r"/tasks/([^/]+)/wait", path):
            state, error = self.outcome
            task = self._task(state, {}, 2, error=error)
            task["result"] = {"applied": {"vlan": 100, "trust": True}} if not error else {}
            return httpx.Response(200, json=task)
        return _err(404, "not-found", f"no route {method} {path}")

    def _task(
        self, state: str, settings: dict[str, Any], index: int, error: str | None = None
    ) -> dict[str, Any]:
        return {
            "id": "t-1", "type": "vf_set", "vm": None, "vm_uuid": None, "node": "node1",
            "state": state, "params": {"pf": "ens1f0", "vf": index, "settings": settings},
            "result": {}, "error": error, "cancel_requested": False, "created_at": NOW,
            "updated_at": NOW, "finished_at": None,
        }  # fmt: skip


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> SriovApi:
    fake = SriovApi()
    monkeypatch.setattr(client_mod, "transport_override", httpx.MockTransport(fake))
    monkeypatch.setenv("BOLLARD_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("BOLLARD_URL", "http://bollard.test")
    monkeypatch.setenv("BOLLARD_TOKEN", TOKEN)
    monkeypatch.delenv("BOLLARD_DEBUG", raising=False)
    return fake


def ok(*args: str) -> str:
    result = run(*args)
    assert result.exit_code == 0, result.output
    return result.stdout


def rows(out: str) -> list[list[str]]:
    """The cells of the VF table's rows (its header and rule are drawn with other lines)."""
    return [[c.strip() for c in ln.split("│")] for ln in out.splitlines() if "│" in ln]


# --- node sriov ----------------------------------------------------------------------------


def test_the_table_shows_each_vf_its_settings_and_its_holder(api: SriovApi) -> None:
    out = ok("node", "sriov", "node1")
    assert "PF ens1f0 on phys1 (0000:03:00.0, MTU 9000): 3 VFs of 8 possible, 1 free" in out
    header = next(ln for ln in out.splitlines() if "┃" in ln)
    assert [c.strip() for c in header.split("┃")] == [
        "PF", "physnet", "VF", "PCI", "netdev", "VLAN", "MAC", "trust", "link", "used by",
    ]  # fmt: skip
    assert rows(out) == [
        ["ens1f0", "phys1", "0", "0000:03:10.0", "ens1f0v0", "100", "52:54:00:ab:cd:ef", "on",
         "auto", "web1"],
        ["ens1f0", "phys1", "1", "0000:03:10.1", "ens1f0v1", "-", "-", "-", "-",
         "db1 (claim pending)"],
        ["ens1f0", "phys1", "2", "0000:03:10.2", "ens1f0v2", "- (set 7)", "-", "-", "-", "-"],
    ]  # fmt: skip
    assert api.sent() == [("GET", "/nodes/node1/sriov", None)]


def test_json_is_the_apis_answer_and_a_node_without_pfs_says_so(api: SriovApi) -> None:
    assert json.loads(ok("node", "sriov", "node1", "-o", "json")) == api.body()
    assert ok("node", "sriov", "empty").strip() == "empty: no SR-IOV PF (its agent reports none)"
    api.connected = False
    assert "node1 is not connected: VF settings cannot be changed" in ok("node", "sriov", "node1")


# --- node vf set ---------------------------------------------------------------------------


def test_vf_set_sends_only_the_settings_given(api: SriovApi) -> None:
    out = ok("node", "vf", "set", "node1", "ens1f0/2", "--vlan", "100", "--qos", "3",
             "--trust", "on", "--spoof-check", "off", "--link-state", "disable",
             "--max-tx-rate", "1000", "--mac", "52:54:00:AA:BB:CC")  # fmt: skip
    assert api.sent() == [("PATCH", "/nodes/node1/sriov/ens1f0/vfs/2", {
        "vlan": 100, "qos": 3, "trust": True, "spoof_check": False, "link_state": "disable",
        "max_tx_rate": 1000, "mac": "52:54:00:AA:BB:CC",
    })]  # fmt: skip
    assert out.strip() == "node1: PF ens1f0 VF 2: being set; task t-1 (`bollard task wait t-1`)"
    task = json.loads(ok("node", "vf", "set", "node1", "ens1f0/0", "--query-rss", "on",
                         "-o", "json"))  # fmt: skip
    assert task["type"] == "vf_set" and task["params"]["settings"] == {"query_rss": True}


def test_vf_set_wait_reports_what_the_host_applied_or_the_failure(api: SriovApi) -> None:
    out = ok("node", "vf", "set", "node1", "ens1f0/2", "--vlan", "100", "--mtu", "9000", "--wait")
    # (what the host read back of the settings changed; mtu: it reported none)
    assert out.strip() == "node1: PF ens1f0 VF 2: set; the host reports mtu=- vlan=100"
    api.outcome = ("failed", "node node1: PF ens1f0 has no VF 2")
    failed = run("node", "vf", "set", "node1", "ens1f0/2", "--vlan", "1", "--wait")
    assert failed.exit_code == 1 and failed.stdout == ""
    assert failed.stderr.strip().splitlines()[-1] == (
        "error: task t-1 (vf_set node1) failed: node node1: PF ens1f0 has no VF 2"
    )


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["ens1f0", "--vlan", "1"], "expected PF/VF"),
        (["ens1f0/x", "--vlan", "1"], "expected PF/VF"),
        (["/3", "--vlan", "1"], "expected PF/VF"),
        (["ens1f0/1"], "nothing to change"),
        (["ens1f0/1", "--vlan", "4095"], "vlan 4095: must be between 0 and 4094"),
        (["ens1f0/1", "--qos", "2"], "qos 2: needs a vlan"),
        (["ens1f0/1", "--min-tx-rate", "10", "--max-tx-rate", "5"], "min-tx-rate 10"),
        (["ens1f0/1", "--mtu", "9"], "mtu 9"),
        (["ens1f0/1", "--mac", "zz"], "mac"),
        (["ens1f0/1", "--trust", "yes"], "'yes'"),
        (["ens1f0/1", "--link-state", "up"], "'up'"),
    ],
)
def test_vf_set_refuses_bad_input_before_any_request(
    api: SriovApi, args: list[str], fragment: str
) -> None:
    one_line_error(run("node", "vf", "set", "node1", *args), fragment, code=2)
    assert api.requests == []


def test_the_servers_refusals_are_one_line(api: SriovApi) -> None:
    one_line_error(run("node", "vf", "set", "node1", "ens9/0", "--vlan", "1"),
                   "node node1 has no SR-IOV PF 'ens9'")  # fmt: skip
    api.connected = False
    one_line_error(run("node", "vf", "set", "node1", "ens1f0/0", "--vlan", "1"),
                   "node node1 is not connected")  # fmt: skip


def test_help_explains_the_options() -> None:
    text = flat(run("node", "vf", "set", "--help").stdout)
    for words in ("PF/VF", "--vlan", "--trust", "on|off", "auto|enable|disable", "--wait",
                  "re-applies it at every start", "admin role"):  # fmt: skip
        assert words in text, words
    assert "claim pending" in flat(run("node", "sriov", "--help").stdout)
