"""The CLI's errors for people: usage errors and odd names in one line (exit code 2, nothing
sent), answers that are not Bollard's explained, a closed pipe ends the output quietly, the
sim commands say each thing once."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner, Result

from bollard.cli import client as client_mod
from bollard.cli.client import ApiError, Client
from bollard.cli.main import app
from bollard.sim import Fabric

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[httpx.Request]:
    """Every request the CLI sends (each answered 404 by a fake server)."""
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(404, json={"error": {"code": "not-found", "message": "nope"}})

    monkeypatch.setattr(client_mod, "transport_override", httpx.MockTransport(handler))
    monkeypatch.setenv("BOLLARD_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("BOLLARD_URL", "http://bollard.test")
    monkeypatch.setenv("BOLLARD_TOKEN", "secret")
    monkeypatch.delenv("BOLLARD_DEBUG", raising=False)
    return requests


def run(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def usage_line(result: Result) -> str:
    """The one line of a usage error (exit code 2, nothing on stdout)."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("error: ")
    for library_phrase in ("Input should be", "Value error", "╭", "Usage:", "Try '"):
        assert library_phrase not in line
    return line


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["vm", "create"], "error: missing argument NAME (see `bollard vm create --help`)"),
        (
            ["vm", "create", "w", "--memory", "512"],
            "error: missing option --vcpus (see `bollard vm create --help`)",
        ),
        (
            ["vm", "create", "w", "--vcpus", "two", "--memory", "512"],
            "error: invalid value for --vcpus: 'two' is not a whole number"
            " (see `bollard vm create --help`)",
        ),
        (
            ["vm", "console-log", "w", "--lines", "0"],
            "error: invalid value for --lines: 0 is out of range: it must be at least 1"
            " (see `bollard vm console-log --help`)",
        ),
        (
            ["vm", "shutdown", "w", "--grace", "soon"],
            "error: invalid value for --grace: 'soon' is not a number"
            " (see `bollard vm shutdown --help`)",
        ),
        (
            ["vm", "list", "-o", "xml"],
            "error: invalid value for --output: 'xml' is not one of 'table', 'json'"
            " (see `bollard vm list --help`)",
        ),
        (
            ["vm", "list", "--limi", "3"],
            "error: no such option --limi; did you mean --limit? (see `bollard vm list --help`)",
        ),
        (
            ["vm", "create", "w", "--vcpus"],
            "error: option --vcpus needs a value (see `bollard vm create --help`)",
        ),
        (
            ["vm", "start", "a", "b"],
            "error: unexpected extra argument(s): b (see `bollard vm start --help`)",
        ),
        (["vmm"], "error: no such command 'vmm'; did you mean 'vm'? (see `bollard --help`)"),
        (["--bogus"], "error: no such option --bogus (see `bollard --help`)"),
    ],
)
def test_a_usage_error_is_one_line_with_where_to_read_more(
    sent: list[httpx.Request], args: list[str], expected: str
) -> None:
    assert usage_line(run(*args)) == expected
    assert sent == []


def test_help_is_still_the_full_help(sent: list[httpx.Request]) -> None:
    result = run("vm", "create", "--help")
    assert result.exit_code == 0, result.output
    assert "Usage" in result.stdout and "--vcpus" in result.stdout and "--memory" in result.stdout
    assert result.stderr == ""


def test_a_group_without_a_command_shows_its_help(sent: list[httpx.Request]) -> None:
    result = run("vm")
    assert result.exit_code == 2
    assert "create" in result.stdout and "migrate" in result.stdout
    assert "error" not in result.stderr


@pytest.mark.parametrize("name", ["", "a/b", "..", ".", "a b", "a?b", "a#b", "-x", "%2F", "x" * 64])
@pytest.mark.parametrize("command", [["vm", "show"], ["vm", "delete"], ["node", "show"]])
def test_an_odd_name_is_refused_before_any_request(
    sent: list[httpx.Request], command: list[str], name: str
) -> None:
    line = usage_line(run(*command, "--", name))
    kind = "node" if command[0] == "node" else "VM"
    assert f"{name!r} is not a valid {kind} name: names are 1 to 63 letters" in line
    assert f"(see `bollard {' '.join(command)} --help`)" in line
    assert sent == []


def test_a_valid_name_is_sent_percent_encoded(sent: list[httpx.Request]) -> None:
    result = run("vm", "show", "web-1.a_b")
    assert result.exit_code == 1
    assert sent[0].url.raw_path == b"/api/v1/vms/web-1.a_b"
    assert result.stderr.strip() == "error: nope"


def test_an_odd_target_node_is_refused(sent: list[httpx.Request]) -> None:
    line = usage_line(run("vm", "migrate", "web", "--to", "../nodes"))
    assert "'../nodes' is not a valid node name" in line
    assert sent == []


# -- answers that are not Bollard's --------------------------------------------------------


def _error(response: httpx.Response, base_url: str = "http://bollard.test") -> str:
    def handler(request: httpx.Request) -> httpx.Response:
        return response

    with (
        Client(base_url, "t", transport=httpx.MockTransport(handler)) as c,
        pytest.raises(ApiError) as info,
    ):
        c.get("/vms")
    message = info.value.message
    assert "\n" not in message
    return message


def test_a_redirect_says_where_to_and_what_to_check() -> None:
    message = _error(httpx.Response(307, headers={"location": "https://login.example/sso"}))
    assert message == (
        "the server at http://bollard.test redirected GET /api/v1/vms to"
        " https://login.example/sso (HTTP 307); Bollard's API does not redirect: check the"
        " server address (BOLLARD_URL, or the context `bollard up` wrote)"
    )


def test_an_unknown_path_on_a_url_with_a_path_says_to_drop_the_path() -> None:
    router_404 = httpx.Response(404, json={"error": {"code": "not-found", "message": "Not Found"}})
    message = _error(router_404, "http://bollard.test:8080/api/v1")
    assert message == (
        "the server at http://bollard.test:8080/api/v1 does not serve GET /api/v1/api/v1/vms"
        " (HTTP 404 Not Found): give the server's address without a path, like"
        " http://bollard.test:8080"
    )


def test_an_unknown_path_on_a_plain_url_asks_about_the_version() -> None:
    router_405 = httpx.Response(
        405, json={"error": {"code": "method-not-allowed", "message": "Method Not Allowed"}}
    )
    assert _error(router_405).endswith(
        "(HTTP 405 Method Not Allowed): is it a server of this CLI's version?"
    )


def test_another_servers_answer_is_named_as_such() -> None:
    page = httpx.Response(
        502, text="<html><body>Bad Gateway</body></html>", headers={"content-type": "text/html"}
    )
    assert _error(page) == (
        "the server at http://bollard.test answered GET /api/v1/vms with HTTP 502 Bad Gateway,"
        " not a Bollard answer (text/html); is it a Bollard server? check the server address"
        " (BOLLARD_URL, or the context `bollard up` wrote)"
    )
    framework = _error(httpx.Response(404, json={"detail": "Not Found"}))
    assert "HTTP 404 Not Found, not a Bollard answer: Not Found;" in framework


def test_bollard_errors_keep_their_own_message() -> None:
    gone = httpx.Response(
        404, json={"error": {"code": "not-found", "message": "VM 'x' does not exist"}}
    )
    assert _error(gone) == "VM 'x' does not exist"


# -- a closed pipe --------------------------------------------------------------------------

_PIPE_SCRIPT = textwrap.dedent(
    """
    import sys, httpx
    from bollard.cli import client
    from bollard.cli.main import main

    # 5000 rows: over 300 KB as a table, many times what a pipe holds (64 KB), so the
    # writer is still writing when the reader closes its end.
    ITEMS = [{"id": i, "name": f"vm{i}", "status": "ACTIVE", "kind": "vm.state",
              "message": "x" * 100} for i in range(5000)]

    def handler(request):
        return httpx.Response(200, json={"items": ITEMS, "next_cursor": None, "total": 5000})

    client.transport_override = httpx.MockTransport(handler)
    sys.argv = ["bollard", *sys.argv[1:]]
    main()
    """
)


@pytest.mark.parametrize("args", [["vm", "list", "-o", "json"], ["vm", "list"]])
def test_a_reader_that_stops_early_ends_the_output_quietly(tmp_path: Path, args: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONUNBUFFERED", "BOLLARD_DEBUG")}
    env.update(
        BOLLARD_URL="http://bollard.test",
        BOLLARD_TOKEN="t",
        BOLLARD_CONFIG_DIR=str(tmp_path),
        PYTHONPATH=str(ROOT / "src"),
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", _PIPE_SCRIPT, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()  # like `| head -1`: one line, then the pipe is closed
    proc.stdout.close()
    try:
        err = proc.stderr.read()
        code = proc.wait(timeout=60)
    finally:
        proc.kill()
    assert first.strip()
    assert err.decode() == ""  # not "error: Broken pipe", nor a traceback
    assert code == 1


# -- sim commands ---------------------------------------------------------------------------


def test_sim_commands_say_each_thing_once(tmp_path: Path) -> None:
    """(In a process of its own: under pytest, log records never reach Python's last-resort
    handler, which printed them a second time.)"""
    fabric = Fabric(tmp_path / "fabric")
    fabric.host("node1").ensure_host(4, 4096)
    where = ["--fabric-dir", str(tmp_path / "fabric")]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "BOLLARD_CONFIG_DIR": str(tmp_path)}
    for args, said in (
        (["sim", "partition", "node1"], "partitioned"),
        (["sim", "heal", "node1"], "healed"),
        (["sim", "power", "off", "node1"], "powered off"),
        (["sim", "power", "on", "node1"], "powered on"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "bollard", *args, *where],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert (done.stdout + done.stderr).count(said) == 1, (done.stdout, done.stderr)
        assert done.stderr == ""
