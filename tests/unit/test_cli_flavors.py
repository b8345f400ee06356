"""`bollard flavor ...` and `vm create --flavor` against the in-memory fake of the issue-19
API of test_cli_resize.py: requests sent, output (tables and -o json), and bad input refused
before any request."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.unit.cli_api19 import Api19, field, flat, install, ok, one_line_error, run


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Api19:
    return install(monkeypatch, tmp_path)


# -- flavor create --------------------------------------------------------------------------


def test_flavor_create_sends_the_size_and_says_it(api: Api19) -> None:
    result = ok("flavor", "create", "small", "--vcpus", "1", "--memory", "1024")
    assert api.sent() == [
        ("POST", "/flavors", {"name": "small", "vcpus": 1, "memory_mb": 1024, "disk_mb": 0,
                              "description": None, "properties": {}}),
    ]  # fmt: skip
    assert result.stdout.strip() == "Flavor small created: 1 vCPU, 1 GiB memory, no root disk."


def test_flavor_create_with_disk_properties_and_description(api: Api19) -> None:
    result = ok(
        "flavor", "create", "db.large", "--vcpus", "8", "--memory-mb", "16384", "--disk", "40G",
        "--property", "hw:cpu_policy=dedicated", "--property", "tier=gold",
        "--property", "tier=silver", "--property", "note=a=b", "--property", "empty=",
        "--description", "for databases",
    )  # fmt: skip
    assert api.sent()[0][2] == {
        "name": "db.large", "vcpus": 8, "memory_mb": 16384, "disk_mb": 40960,
        "description": "for databases",
        "properties": {"hw:cpu_policy": "dedicated", "tier": "silver", "note": "a=b",
                       "empty": ""},
    }  # fmt: skip
    assert result.stdout.strip() == (
        "Flavor db.large created: 8 vCPUs, 16 GiB memory, root disk 40 GiB."
    )
    out = json.loads(ok("flavor", "create", "f2", "--vcpus", "2", "--memory", "1536",
                        "--disk", "512", "-o", "json").stdout)  # fmt: skip
    assert out == api.flavors["f2"] and out["disk_mb"] == 512


def test_flavor_create_twice_is_the_servers_one_line(api: Api19) -> None:
    api.flavor("small")
    one_line_error(
        run("flavor", "create", "small", "--vcpus", "1", "--memory", "64"),
        "flavor 'small' already exists",
    )


SIZE = ["--vcpus", "1", "--memory", "64"]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ([*SIZE, "--property", "novalue"], "'novalue' is not KEY=VALUE"),
        ([*SIZE, "--property", "=x"], "'' is not a property key"),
        ([*SIZE, "--property", "a b=c"], "'a b' is not a property key"),
        ([*SIZE, "--property", "k=" + "v" * 256], "longer than 255"),
        ([*SIZE, "--property", "ok=1", "--property", "bad"], "'bad' is not KEY=VALUE"),
        (["--vcpus", "0", "--memory", "64"], "--vcpus"),
        (["--vcpus", "1", "--memory", "0"], "--memory"),
        (["--memory", "64"], "missing option --vcpus"),
        ([*SIZE, "--disk", "10x"], "'10x' is not a size"),
        ([*SIZE, "--disk", "-1"], "is not a size"),
    ],
)
def test_flavor_create_refuses_bad_input_before_any_request(
    api: Api19, args: list[str], fragment: str
) -> None:
    line = one_line_error(run("flavor", "create", "f1", *args), fragment, code=2)
    assert line.endswith("(see `bollard flavor create --help`)")
    assert api.requests == []


def test_flavor_names_are_checked_before_any_request(api: Api19) -> None:
    one_line_error(run("flavor", "show", "a/b"), "'a/b' is not a valid flavor name", code=2)
    one_line_error(run("flavor", "delete", ".."), "not a valid flavor name", code=2)
    one_line_error(
        run("flavor", "create", "-bad", "--vcpus", "1", "--memory", "64"), code=2
    )  # an option-like name: a usage error
    assert api.requests == []


# -- flavor list and show -------------------------------------------------------------------


def test_flavor_list_shows_sizes_use_and_properties(api: Api19) -> None:
    api.flavor("small", 1, 1024, used_by=3)
    api.flavor("large", 4, 8192, disk_mb=40960, properties={"tier": "gold", "hw:numa": "1"})
    api.flavor("tiny", 1, 512)
    table = ok("flavor", "list").stdout
    assert [c.strip() for c in table.splitlines()[0].split("┃")] == [
        "NAME", "VCPUS", "MEMORY", "ROOT DISK", "USED BY", "PROPERTIES",
    ]  # fmt: skip
    rows = [line.strip() for line in table.splitlines()[2:]]
    assert re.fullmatch(r"large │ 4\s+│ 8 GiB\s+│ 40 GiB\s+│ 0\s+│ hw:numa=1, tier=gold", rows[0])
    assert re.fullmatch(r"small │ 1\s+│ 1 GiB\s+│ none\s+│ 3\s+│ -", rows[1])
    assert re.fullmatch(r"tiny\s+│ 1\s+│ 512 MiB │ none\s+│ 0\s+│ -", rows[2])
    listed = json.loads(ok("flavor", "list", "-o", "json").stdout)
    assert listed == [api.flavors[n] for n in ("large", "small", "tiny")]  # every page
    assert len([r for r in api.requests if r.url.path == "/api/v1/flavors"]) == 2 + 2
    limited = json.loads(ok("flavor", "list", "--limit", "1", "-o", "json").stdout)
    assert [f["name"] for f in limited] == ["large"]


def test_flavor_show(api: Api19) -> None:
    flavor = api.flavor("large", 4, 8192, disk_mb=40960, description="big ones", used_by=1,
                        properties={"tier": "gold"})  # fmt: skip
    shown = ok("flavor", "show", "large").stdout
    assert api.sent() == [("GET", "/flavors/large", None)]
    assert field(shown, "vcpus") == "4" and field(shown, "memory") == "8 GiB"
    assert field(shown, "root disk") == "40 GiB"
    assert field(shown, "properties") == "tier=gold"
    assert field(shown, "used by") == "1 VM"
    assert field(shown, "description") == "big ones"
    assert json.loads(ok("flavor", "show", "large", "-o", "json").stdout) == flavor
    api.flavor("bare", used_by=2)
    shown = ok("flavor", "show", "bare").stdout
    assert field(shown, "properties") == "none" and field(shown, "root disk") == "none"
    assert field(shown, "used by") == "2 VMs" and field(shown, "description") == "-"
    one_line_error(run("flavor", "show", "ghost"), "flavor 'ghost' not found")


# -- flavor set -----------------------------------------------------------------------------


def test_flavor_set_sends_only_what_changes(api: Api19) -> None:
    api.flavor("large", properties={"tier": "gold", "old": "1"}, description="d")
    ok("flavor", "set", "large", "--property", "tier=silver", "--property", "new=2")
    ok("flavor", "set", "large", "--unset-property", "old", "--unset-property", "old")
    ok("flavor", "set", "large", "--description", "bigger")
    result = ok("flavor", "set", "large", "--no-description", "-o", "json")
    assert [(m, p) for m, p, _ in api.sent()] == [("PATCH", "/flavors/large")] * 4
    assert [body for _, _, body in api.sent()] == [
        {"properties": {"tier": "silver", "new": "2"}},
        {"unset_properties": ["old"]},
        {"description": "bigger"},
        {"description": None},
    ]
    out = json.loads(result.stdout)
    assert out["description"] is None and out["properties"] == {"tier": "silver", "new": "2"}


def test_flavor_set_shows_the_flavor(api: Api19) -> None:
    api.flavor("large", 4, 8192)
    shown = ok("flavor", "set", "large", "--property", "tier=gold").stdout
    assert field(shown, "properties") == "tier=gold" and field(shown, "vcpus") == "4"


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ([], "nothing to change"),
        (["--description", "x", "--no-description"], "not both"),
        (["--property", "tier=gold", "--unset-property", "tier"],
         "property tier is both set and unset"),
        (["--property", "tier"], "'tier' is not KEY=VALUE"),
        (["--unset-property", "a b"], "'a b' is not a property key"),
    ],
)  # fmt: skip
def test_flavor_set_refuses_bad_input_before_any_request(
    api: Api19, args: list[str], fragment: str
) -> None:
    line = one_line_error(run("flavor", "set", "large", *args), fragment, code=2)
    assert line.endswith("(see `bollard flavor set --help`)")
    assert api.requests == []


# -- flavor delete --------------------------------------------------------------------------


def test_flavor_delete(api: Api19) -> None:
    api.flavor("small")
    result = ok("flavor", "delete", "small")
    assert api.sent() == [("DELETE", "/flavors/small", None)]
    assert result.stdout.strip() == "Flavor small deleted."
    assert "small" not in api.flavors
    one_line_error(run("flavor", "delete", "small"), "flavor 'small' not found")


def test_flavor_delete_in_use_is_the_servers_one_line(api: Api19) -> None:
    api.flavor("small")
    for name in ("a", "b", "c"):
        api.vm(name, "small")
    one_line_error(run("flavor", "delete", "small"), "flavor small is in use by 3 VMs: a, b, c")
    assert "small" in api.flavors


# -- vm create --flavor ---------------------------------------------------------------------


def test_vm_create_with_a_flavor(api: Api19) -> None:
    api.flavor("large", 4, 8192, disk_mb=40960)
    result = ok("vm", "create", "web1", "--flavor", "large", "--wait")
    assert api.sent()[0] == ("POST", "/vms", {"name": "web1", "flavor": "large", "start": False})
    assert result.stdout.strip() == "task t1 (create web1) succeeded; web1 is SHUTOFF on node1."
    ok("vm", "create", "web2", "--flavor", "large", "--root-pool", "nfs1", "--disk", "10G@nfs1",
       "--start")  # fmt: skip
    assert api.sent()[-1] == (
        "POST", "/vms",
        {"name": "web2", "flavor": "large", "root_pool": "nfs1", "start": True,
         "disks": [{"size_mb": 10240, "pool": "nfs1"}]},
    )  # fmt: skip


def test_vm_create_by_hand_sends_no_flavor(api: Api19) -> None:
    ok("vm", "create", "web1", "--vcpus", "2", "--memory", "512")
    assert api.sent() == [
        ("POST", "/vms", {"name": "web1", "vcpus": 2, "memory_mb": 512, "start": False})
    ]


def test_vm_create_with_an_unknown_flavor_is_the_servers_one_line(api: Api19) -> None:
    one_line_error(run("vm", "create", "web1", "--flavor", "huge"), "flavor 'huge' not found")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give the VM's size: --flavor NAME (`bollard flavor list`), or --vcpus and --memory"),
        (["--vcpus", "2"], "missing option --memory"),
        (["--memory", "512"], "missing option --vcpus"),
        (["--flavor", "large", "--vcpus", "2"],
         "give either --flavor or --vcpus and --memory, not both: the flavor sets the size"),
        (["--flavor", "large", "--vcpus", "2", "--memory", "512"],
         "give either --flavor or --vcpus and --memory, not both: the flavor sets the size"),
        (["--flavor", "large", "--memory", "512"],
         "give either --flavor or --vcpus and --memory, not both: the flavor sets the size"),
        (["--vcpus", "2", "--memory", "512", "--root-pool", "nfs1"],
         "--root-pool goes with --flavor: the root disk is the flavor's (without a flavor, "
         "give the disks with --disk SIZE@POOL)"),
        (["--flavor", "a/b"],
         "'a/b' is not a valid flavor name: names are 1 to 63 letters, digits, '.', '_' or "
         "'-', starting with a letter or digit"),
        (["--flavor", "large", "--root-pool", "NFS"],
         "'NFS' is not a valid pool name: 1 to 63 lower-case letters, digits, '_' or '-', "
         "starting with a letter or digit"),
    ],
)  # fmt: skip
def test_vm_create_needs_a_flavor_or_a_size_not_both(
    api: Api19, args: list[str], message: str
) -> None:
    line = one_line_error(run("vm", "create", "web1", *args), code=2)
    assert line == f"error: {message} (see `bollard vm create --help`)"
    assert api.requests == []


def test_vm_show_names_the_flavor_or_custom(api: Api19) -> None:
    api.flavor("small")
    api.vm("web1", "small")
    api.vm("byhand")
    assert field(ok("vm", "show", "web1").stdout, "flavor") == "small"
    assert field(ok("vm", "show", "byhand").stdout, "flavor") == "custom"
    old: dict[str, Any] = {"name": "old", "status": "ACTIVE"}  # a server before flavors
    api.vms["old"] = old
    assert field(ok("vm", "show", "old").stdout, "flavor") == "-"


# -- help -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["flavor"], "a VM keeps its own copy of its flavor"),
        (["flavor", "create"], "Its size never changes once made"),
        (["flavor", "create"], "grows a VM's root disk to it, never shrinks one"),
        (["flavor", "list"], "how many VMs have each as their flavor"),
        (["flavor", "show"], "Show one flavor"),
        (["flavor", "set"], "VMs already made with the flavor keep the copy they took"),
        (["flavor", "delete"], "Refused while a VM has it as its flavor"),
        (["vm", "create"], "The VM keeps a copy of the flavor"),
        (["vm", "create"], "--root-pool"),
    ],
)
def test_flavor_commands_explain_themselves(args: list[str], words: str) -> None:
    result = ok(*args, "--help")
    assert "Usage" in result.stdout
    assert words in flat(result.stdout)
