"""The CLI with cells (issue 20, api20.md) against the in-memory fake of cli_api20.py:
`bollard cell ...`, the cell field of a VM and a node (only behind an API server; the lists
and their warning lines are in test_cli_cells_lists.py), `bollard status` in cells mode,
`vm create --cell`, the one line of a plain server, and the options `bollard api` passes to
the API server."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from bollard.cells.config import ApiConfig
from bollard.cli import up_cells, up_cmd
from bollard.cli.client import Client, CliError
from bollard.cli.cluster import ClusterRecord, ProcessRecord
from bollard.cli.context import load_context
from bollard.cli.sim_common import resolve_fabric_dir
from bollard.sim.fabric import Fabric
from tests.unit.cli_api19 import field, flat, ok, one_line_error, run
from tests.unit.cli_api20 import (
    CA_PEM,
    CELL_TOKEN,
    TOKEN,
    Api20,
    install,
    row_of,
    secret_file,
    table,
)


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Api20:
    return install(monkeypatch, tmp_path)


@pytest.fixture
def plain(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Api20:
    return install(monkeypatch, tmp_path, mode="single")


@pytest.fixture
def two_cells(api: Api20) -> Api20:
    """cell1 (node1, web1) and cell2 (node2, db1, db2), both answering."""
    api.cell("cell1")
    api.cell("cell2", database="postgresql", latency_ms=12.06)
    api.node("cell1-node1", "cell1")
    api.node("cell2-node1", "cell2")
    api.vm("web1", "cell1", node="cell1-node1")
    api.vm("db1", "cell2", node="cell2-node1")
    api.vm("db2", "cell2", node="cell2-node1", status="SHUTOFF", observed_power="shutoff")
    return api


# -- cell list / show -----------------------------------------------------------------------


def test_cell_list_shows_each_cell_with_state_counts_latency_database_url(
    two_cells: Api20,
) -> None:
    two_cells.cut("cell2", "connection refused")
    two_cells.cells["cell1"]["disabled"] = True
    result = ok("cell", "list")
    assert table(result.stdout)[0] == [
        "NAME", "STATE", "NODES", "VMS", "LATENCY", "DATABASE", "URL", "ERROR",
    ]  # fmt: skip
    assert row_of(result.stdout, "cell1") == {
        "NAME": "cell1", "STATE": "up (disabled)", "NODES": "1", "VMS": "1",
        "LATENCY": "3.1 ms", "DATABASE": "sqlite", "URL": "https://127.0.0.1:8701", "ERROR": "-",
    }  # fmt: skip
    cell2 = row_of(result.stdout, "cell2")
    assert (cell2["STATE"], cell2["LATENCY"], cell2["ERROR"]) == (
        "unreachable", "-", "connection refused",
    )  # fmt: skip
    assert result.stderr == ""


def test_cell_list_json_is_the_cells_as_the_server_sent_them(two_cells: Api20) -> None:
    cells = json.loads(ok("cell", "list", "-o", "json").stdout)
    assert cells == [two_cells.cells["cell1"], two_cells.cells["cell2"]]


def test_cell_list_without_cells_says_how_to_add_one(api: Api20) -> None:
    assert "add one with `bollard cell create" in ok("cell", "list").stdout


def test_cell_show_has_its_fields_status_and_node_names(two_cells: Api20) -> None:
    two_cells.node("cell2-node2", "cell2")
    out = ok("cell", "show", "cell2").stdout
    assert field(out, "state") == "up"
    assert field(out, "database") == "postgresql"
    assert field(out, "latency") == "12.1 ms"
    assert field(out, "nodes") == "2"
    assert field(out, "vms") == "2"
    assert field(out, "status: nodes") == "2/2 connected"
    assert field(out, "status: vms") == "2 (2 ACTIVE)"
    assert field(out, "node names") == "cell2-node1, cell2-node2"
    shown = json.loads(ok("cell", "show", "cell2", "-o", "json").stdout)
    assert shown["node_names"] == ["cell2-node1", "cell2-node2"]
    assert shown["status"]["vms"]["total"] == 2


def test_cell_show_of_a_cell_that_did_not_answer(two_cells: Api20) -> None:
    two_cells.cut("cell2", "timed out")
    out = ok("cell", "show", "cell2").stdout
    assert field(out, "state") == "unreachable"
    assert field(out, "error") == "timed out"
    assert field(out, "status") == "- (the cell did not answer)"


def test_cell_show_of_an_unknown_cell_is_the_servers_line(two_cells: Api20) -> None:
    one_line_error(run("cell", "show", "cell9"), "cell 'cell9' not found")


def test_a_bad_cell_name_is_refused_before_any_request(api: Api20) -> None:
    result = run("cell", "show", "a/b")
    assert result.exit_code == 2 and "is not a valid cell name" in result.stderr
    assert api.requests == []


# -- a plain server -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["cell", "list"],
        ["cell", "list", "-o", "json"],
        ["cell", "show", "cell1"],
        ["cell", "delete", "cell1"],
        ["cell", "set", "cell1", "--disable"],
        ["cell", "create", "cell1", "--url", "https://h:1", "--token-file", "TOKEN"],
    ],
)
def test_a_plain_server_says_in_one_line_it_runs_without_cells(
    plain: Api20, tmp_path: Path, args: list[str]
) -> None:
    token = secret_file(tmp_path, "token", CELL_TOKEN)
    args = [str(token) if a == "TOKEN" else a for a in args]
    line = one_line_error(run(*args), "runs without cells")
    assert line == (
        "error: the server at http://bollard.test runs without cells (a plain `bollard "
        "server`); cells live behind an API server: `bollard api`, or `bollard up --cells N` "
        "for a local one"
    )


# -- cell create / set / delete -------------------------------------------------------------


def test_cell_create_sends_the_token_from_its_file_and_the_ca_pem(
    api: Api20, tmp_path: Path
) -> None:
    api.cell_tokens["https://10.0.0.5:8701"] = CELL_TOKEN
    token = secret_file(tmp_path, "admin.token", CELL_TOKEN + "\n")
    ca = secret_file(tmp_path, "ca.pem", CA_PEM)
    result = ok(
        "cell", "create", "cell1", "--url", "https://10.0.0.5:8701",
        "--token-file", str(token), "--ca-file", str(ca),
    )  # fmt: skip
    assert api.sent() == [
        ("POST", "/cells", {"name": "cell1", "url": "https://10.0.0.5:8701",
                            "token": CELL_TOKEN, "ca_pem": CA_PEM}),
    ]  # fmt: skip
    assert result.stdout.strip() == "Cell cell1 added: https://10.0.0.5:8701, up."
    assert CELL_TOKEN not in result.output


def test_cell_create_without_ca_sends_null_and_json_is_the_cell(api: Api20, tmp_path: Path) -> None:
    api.cell_tokens["http://10.0.0.5:8701"] = CELL_TOKEN
    token = secret_file(tmp_path, "admin.token", CELL_TOKEN)
    out = ok(
        "cell", "create", "cell1", "--url", "http://10.0.0.5:8701", "--token-file", str(token),
        "-o", "json",
    ).stdout  # fmt: skip
    assert api.stored["cell1"] == {"token": CELL_TOKEN, "ca_pem": None}
    assert json.loads(out) == api.cells["cell1"]
    assert CELL_TOKEN not in out


def test_cell_create_refused_by_the_server_is_its_one_line(api: Api20, tmp_path: Path) -> None:
    api.cell_tokens["https://h:8701"] = "another-token"
    token = secret_file(tmp_path, "admin.token", CELL_TOKEN)
    args = ["cell", "create", "cell1", "--url", "https://h:8701", "--token-file", str(token)]
    line = one_line_error(run(*args), "cell1: https://h:8701: 401 unknown token")
    assert CELL_TOKEN not in line
    api.cell_tokens["https://h:8701"] = CELL_TOKEN
    ok(*args)
    one_line_error(run(*args), "cell 'cell1' already exists")


@pytest.mark.parametrize(
    ("token_text", "ca_text", "fragment"),
    [
        (None, None, "does not exist"),
        ("", None, "is empty"),
        ("two tokens", None, "must hold a single token"),
        (CELL_TOKEN, "not a certificate", "holds no PEM certificate"),
    ],
)
def test_cell_create_bad_files_fail_before_any_request(
    api: Api20, tmp_path: Path, token_text: str | None, ca_text: str | None, fragment: str
) -> None:
    token = tmp_path / "admin.token"
    if token_text is not None:
        token.write_text(token_text)
    args = ["cell", "create", "cell1", "--url", "https://h:1", "--token-file", str(token)]
    if ca_text is not None:
        args += ["--ca-file", str(secret_file(tmp_path, "ca.pem", ca_text))]
    one_line_error(run(*args), fragment)
    assert api.requests == []


@pytest.mark.parametrize("url", ["h:1", "ftp://h:1", "https://", "https://h:99999"])
def test_cell_create_bad_url_is_a_usage_error(api: Api20, tmp_path: Path, url: str) -> None:
    token = secret_file(tmp_path, "admin.token", CELL_TOKEN)
    result = run("cell", "create", "cell1", "--url", url, "--token-file", str(token))
    assert result.exit_code == 2, result.output
    assert "--url must look like https://HOST:PORT" in result.stderr
    assert api.requests == []


def test_cell_create_has_no_token_option(api: Api20) -> None:
    result = run("cell", "create", "cell1", "--url", "https://h:1", "--token", CELL_TOKEN)
    assert result.exit_code == 2 and "no such option --token" in result.stderr
    assert "--token-file" in flat(run("cell", "create", "--help").stdout)


def test_cell_set_sends_only_what_is_given(two_cells: Api20, tmp_path: Path) -> None:
    token = secret_file(tmp_path, "new.token", "new-token")
    ca = secret_file(tmp_path, "ca.pem", CA_PEM)
    out = ok("cell", "set", "cell1", "--disable").stdout
    assert field(out, "state") == "up (disabled)"
    assert field(out, "disabled") == "yes: gets no new VMs"
    ok("cell", "set", "cell1", "--enable", "--url", "https://h2:9000")
    ok("cell", "set", "cell1", "--token-file", str(token), "--ca-file", str(ca))
    assert [s for s in two_cells.sent() if s[0] == "PATCH"] == [
        ("PATCH", "/cells/cell1", {"disabled": True}),
        ("PATCH", "/cells/cell1", {"url": "https://h2:9000", "disabled": False}),
        ("PATCH", "/cells/cell1", {"token": "new-token", "ca_pem": CA_PEM}),
    ]
    assert two_cells.cells["cell1"]["url"] == "https://h2:9000"
    shown = json.loads(ok("cell", "set", "cell1", "--disable", "-o", "json").stdout)
    assert shown["disabled"] is True


def test_cell_set_weight_sends_the_multiplier_or_null(two_cells: Api20) -> None:
    assert field(ok("cell", "set", "cell1", "--weight", "-1e6").stdout, "weight") == "-1e+06"
    assert field(ok("cell", "set", "cell1", "--weight", "default").stdout, "weight") == "default"
    bad = run("cell", "set", "cell1", "--weight", "lots")
    assert bad.exit_code == 2 and "not a number" in bad.stderr
    assert [s for s in two_cells.sent() if s[0] == "PATCH"] == [
        ("PATCH", "/cells/cell1", {"weight_multiplier": -1e6}),
        ("PATCH", "/cells/cell1", {"weight_multiplier": None}),
    ]


def test_cell_set_with_nothing_to_change_is_a_usage_error(two_cells: Api20) -> None:
    result = run("cell", "set", "cell1")
    assert result.exit_code == 2 and "nothing to change" in result.stderr
    assert two_cells.requests == []


def test_cell_delete_and_its_refusal(two_cells: Api20) -> None:
    one_line_error(run("cell", "delete", "cell2"), "cell cell2 still has 1 nodes and 2 VMs")
    two_cells.cell("cell3")
    assert ok("cell", "delete", "cell3").stdout.strip() == "Cell cell3 deleted."
    assert "cell3" not in two_cells.cells
    one_line_error(run("cell", "delete", "cell3"), "cell 'cell3' not found")


# -- VMs and nodes with cells ---------------------------------------------------------------


def test_vm_and_node_show_name_their_cell(two_cells: Api20) -> None:
    assert field(ok("vm", "show", "db1").stdout, "cell") == "cell2"
    out = ok("node", "show", "cell1-node1").stdout
    assert field(out, "cell") == "cell1"
    assert field(out, "vcpus") == "0/16 used, 16 free"


def test_vm_and_node_show_of_a_plain_server_have_no_cell(plain: Api20) -> None:
    plain.vm("web1")
    plain.node("node1")
    for args in (("vm", "show", "web1"), ("node", "show", "node1")):
        out = ok(*args).stdout
        assert "cell" not in out, out


def test_vm_show_in_a_cell_that_did_not_answer_is_one_line(two_cells: Api20) -> None:
    two_cells.cut("cell2", "connection refused")
    one_line_error(
        run("vm", "show", "db1"),
        "cell cell2 did not answer within 5 s: connection refused",
        "cell-unreachable",
    )


def test_vm_create_in_a_cell(two_cells: Api20) -> None:
    out = ok("vm", "create", "web2", "--vcpus", "1", "--memory", "64", "--cell", "cell2")
    assert two_cells.sent()[-1] == (
        "POST", "/vms",
        {"name": "web2", "vcpus": 1, "memory_mb": 64, "start": False, "cell": "cell2"},
    )  # fmt: skip
    assert "accepted" in out.stdout
    assert two_cells.vms["web2"]["cell"] == "cell2"
    one_line_error(
        run("vm", "create", "web3", "--vcpus", "1", "--memory", "64", "--cell", "cell9"),
        "cell: no cell named cell9",
    )
    result = run("vm", "create", "web3", "--vcpus", "1", "--memory", "64", "--cell", "a b")
    assert result.exit_code == 2 and "is not a valid cell name" in result.stderr


def test_vm_create_without_cell_sends_none(two_cells: Api20) -> None:
    ok("vm", "create", "web2", "--vcpus", "1", "--memory", "64")
    assert "cell" not in two_cells.sent()[-1][2]


# -- status ---------------------------------------------------------------------------------


def test_status_with_cells_shows_the_mode_and_each_cell(two_cells: Api20) -> None:
    out = ok("status").stdout
    assert field(out, "mode") == "cells: an API server in front of 2 cells"
    assert field(out, "vms") == "3 (2 ACTIVE, 1 SHUTOFF)"
    assert row_of(out, "cell1") == {"NAME": "cell1", "STATE": "up", "ERROR": "-"}
    two_cells.cut("cell2", "connection refused")
    out = ok("status").stdout
    assert field(out, "mode") == (
        "cells: an API server in front of 2 cells (1 did not answer: the counts are the others')"
    )
    assert field(out, "vms") == "1 (1 ACTIVE)"
    assert row_of(out, "cell2") == {
        "NAME": "cell2", "STATE": "unreachable", "ERROR": "connection refused",
    }  # fmt: skip
    data = json.loads(ok("status", "-o", "json").stdout)
    assert data["mode"] == "cells" and data["unreachable"][0]["cell"] == "cell2"


def test_status_of_a_plain_server_has_no_mode_line(plain: Api20) -> None:
    plain.node("node1")
    out = ok("status").stdout
    assert "mode" not in out and "cells" not in out
    assert field(out, "nodes") == "1/1 connected"


# -- bollard api ----------------------------------------------------------------------------


@pytest.fixture
def api_runs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[ApiConfig, str]]:
    calls: list[tuple[ApiConfig, str]] = []

    def fake_run_api(config: ApiConfig, log_level: str = "info") -> None:
        calls.append((config, log_level))

    monkeypatch.setattr("bollard.cells.main.run_api", fake_run_api)
    monkeypatch.delenv("BOLLARD_API_DB", raising=False)
    monkeypatch.delenv("BOLLARD_API_DATA_DIR", raising=False)
    return calls


def test_bollard_api_passes_its_options(
    api_runs: list[tuple[ApiConfig, str]], tmp_path: Path
) -> None:
    cert, key, ca = (secret_file(tmp_path, n, "x") for n in ("c.pem", "k.pem", "ca.pem"))
    ok(
        "api", "--data-dir", str(tmp_path), "--listen", "0.0.0.0:9000", "--cell-deadline",
        "2.5", "--tls-cert", str(cert), "--tls-key", str(key), "--tls-client-ca", str(ca),
        "--log-level", "DEBUG",
    )  # fmt: skip
    (config, level), *_ = api_runs
    assert (config.host, config.port, config.cell_deadline) == ("0.0.0.0", 9000, 2.5)
    assert config.db_url == f"sqlite:///{tmp_path.resolve() / 'bollard-api.db'}"
    assert (config.tls_cert, config.tls_key, config.tls_client_ca) == (cert, key, ca)
    assert config.data_dir == tmp_path and level == "debug"


def test_bollard_api_host_and_port_and_db(
    api_runs: list[tuple[ApiConfig, str]], tmp_path: Path
) -> None:
    ok("api", "--data-dir", str(tmp_path), "--host", "10.1.2.3", "--port", "8800",
       "--db", "postgresql://bollard@db/api")  # fmt: skip
    config = api_runs[0][0]
    assert (config.host, config.port, config.db_url) == (
        "10.1.2.3", 8800, "postgresql://bollard@db/api",
    )  # fmt: skip
    assert config.tls_cert is None and config.cell_deadline == 5.0


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--tls-cert", "c.pem"], "--tls-cert and --tls-key go together"),
        (["--tls-client-ca", "ca.pem"], "--tls-client-ca needs --tls-cert"),
        (["--listen", "nowhere"], "--listen must be HOST:PORT"),
    ],
)
def test_bollard_api_bad_options_are_one_line(
    api_runs: list[tuple[ApiConfig, str]], tmp_path: Path, args: list[str], fragment: str
) -> None:
    one_line_error(run("api", "--data-dir", str(tmp_path), *args), fragment)
    assert api_runs == []


def test_bollard_api_help_names_its_options() -> None:
    text = flat(ok("api", "--help").stdout)
    for option in ("--listen", "--data-dir", "--db", "--cell-deadline", "--tls-cert",
                   "--tls-key", "--tls-client-ca", "--log-level"):  # fmt: skip
        assert option in text
    assert "bollard-api.db" in text and "admin.token" in text


def test_the_cell_commands_are_listed(api: Api20) -> None:
    text = flat(ok("cell", "--help").stdout)
    for command in ("list", "show", "create", "set", "delete"):
        assert command in text


def test_no_admin_token_in_any_output(two_cells: Api20) -> None:
    for args in (("cell", "list"), ("cell", "show", "cell1"), ("status",)):
        assert TOKEN not in ok(*args).output


# -- bollard up --cells, and the sim fabric of a node ---------------------------------------


def test_up_cells_plan_names_ports_and_command_lines(tmp_path: Path) -> None:
    plan = up_cells.CellsPlan(tmp_path, "127.0.0.1", 9000, cells=2, nodes=2)
    assert plan.ports == [9000, 9001, 9002]
    assert plan.node_names("cell2") == ["cell2-node1", "cell2-node2"]
    api_argv = up_cells.api_argv(plan, None)
    assert api_argv[3:] == ["api", "--data-dir", str(tmp_path), "--listen", "127.0.0.1:9000"]
    cell2 = tmp_path / "cells" / "cell2"
    assert up_cells.cell_server_argv(plan, "cell2", None)[3:] == [
        "server", "--data-dir", str(cell2), "--listen", "127.0.0.1:9002",
        "--heartbeat-interval", "5", "--sim-fabric-dir", str(cell2 / "fabric"),
    ]  # fmt: skip
    agent = up_cells.agent_argv(plan, "cell2", "cell2-node1", None)
    after = {agent[i]: agent[i + 1] for i in range(3, len(agent) - 1) if agent[i][:2] == "--"}
    assert after["--server"] == "https://127.0.0.1:9002"
    assert after["--fabric-dir"] == str(cell2 / "fabric")
    assert after["--token-file"] == str(cell2 / "agents" / "cell2-node1" / "token")


def test_up_with_cells_starts_them_and_points_the_context_at_the_api_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plans: list[up_cells.CellsPlan] = []

    def fake_start(launcher: Any, plan: up_cells.CellsPlan, tls: Any, timeout: float) -> list[str]:
        plans.append(plan)
        return [n for c in plan.cell_names for n in plan.node_names(c)]

    monkeypatch.setenv("BOLLARD_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setattr(up_cells, "start_cells", fake_start)
    monkeypatch.setattr(up_cmd, "check_port_free", lambda host, port: None)  # nothing listens
    umask = os.umask(0o022)  # `bollard up` sets its own: the test process gets it back
    try:
        out = ok("up", "--detach", "--insecure-http", "--cells", "2", "--nodes", "3",
                 "--data-dir", str(tmp_path / "data"), "--port", "9100").stdout  # fmt: skip
    finally:
        os.umask(umask)
    [plan] = plans
    assert (plan.cells, plan.nodes, plan.api_url) == (2, 3, "http://127.0.0.1:9100")
    context = load_context()
    assert context is not None and context.url == "http://127.0.0.1:9100"
    assert context.token_file == str(tmp_path / "data" / "admin.token")
    assert "cell2: server http://127.0.0.1:9102, nodes cell2-node1, cell2-node2, cell2-node3" in out
    error = run("up", "--detach", "--cells", "2", "--client-certs", "--data-dir", str(tmp_path))
    one_line_error(error, "--client-certs does not go with --cells")


def test_up_cells_registers_each_cell_again_after_a_restart(api: Api20) -> None:
    api.cell_tokens["https://h:1"] = "t1"
    with Client("http://bollard.test", TOKEN) as client:
        up_cells.register_cell(client, "cell1", "https://h:1", "t1", CA_PEM)
        up_cells.register_cell(client, "cell1", "https://h:2", "t2", CA_PEM)
    assert [(m, p) for m, p, _ in api.sent()] == [("POST", "/cells"), ("POST", "/cells"),
                                                  ("PATCH", "/cells/cell1")]  # fmt: skip
    assert api.cells["cell1"]["url"] == "https://h:2"
    assert api.stored["cell1"] == {"token": "t2", "ca_pem": CA_PEM}


def test_up_cells_waits_until_every_cell_is_up_and_its_nodes_connected(
    two_cells: Api20, tmp_path: Path
) -> None:
    expected = {"cell1": ["cell1-node1"], "cell2": ["cell2-node1"]}
    with Client("http://bollard.test", TOKEN) as client:
        up_cells.wait_cells_ready(client, expected, 5.0, tmp_path)
        two_cells.cut("cell2", "connection refused")
        with pytest.raises(CliError, match=r"did not see cell2 ready .*connection refused"):
            up_cells.wait_cells_ready(client, expected, 0.1, tmp_path)


def test_down_stops_agents_then_cell_servers_then_the_api_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    waves: list[list[str]] = []

    def fake_stop(procs: Any, **_: Any) -> tuple[list[str], list[str]]:
        waves.append([p.name for p in procs])
        return waves[-1], []

    monkeypatch.setattr(up_cells, "stop_processes", fake_stop)
    names = ["api", "cell1", "cell2", "cell1-node1", "cell2-node1"]
    record = ClusterRecord("u", "d", [ProcessRecord(n, 1, [], "") for n in names])
    ran, _ = up_cells.stop_in_order(record, timeout=1)
    assert waves == [["cell1-node1", "cell2-node1"], ["cell1", "cell2"], ["api"]]
    assert ran == ["cell1-node1", "cell2-node1", "cell1", "cell2", "api"]


def test_sim_commands_find_the_fabric_of_a_nodes_cell(tmp_path: Path) -> None:
    for cell, node in (("cell1", "cell1-node1"), ("cell2", "cell2-node1"), ("cell2", "extra")):
        Fabric(tmp_path / "cells" / cell / "fabric").host(node).ensure_host(4, 4096)
    cell2 = tmp_path / "cells" / "cell2" / "fabric"
    assert resolve_fabric_dir(None, tmp_path, "cell2-node1") == cell2
    assert resolve_fabric_dir(None, tmp_path, "extra") == cell2  # found by looking
    assert resolve_fabric_dir(None, tmp_path / "cells" / "cell2") == cell2
    out = ok("sim", "load", "set", "cell2-node1", "0.5", "--data-dir", str(tmp_path)).stdout
    assert out.strip() == "cell2-node1 reports load 0.5"
    one_line_error(
        run("sim", "load", "set", "cell9-node1", "1", "--data-dir", str(tmp_path)),
        "no sim host 'cell9-node1' in the sim fabrics of the cells",
    )
    one_line_error(
        run("sim", "list", "--data-dir", str(tmp_path)),
        f"has cells (cell1, cell2), each with its own sim fabric: pass --data-dir {tmp_path}/",
    )
