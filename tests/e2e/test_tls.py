"""TLS end to end: `bollard up` serves HTTPS/WSS with a CA of its own, agents and the CLI
verify the server with it, client certificates, and what a wrong CA or URL says.

Also defect 18 (`make up ARGS=...`, the "Try:" hint works without the venv active, `bollard
down` removes the CLI context of the cluster it stopped). Real processes on free ports; every
wait has a deadline.
"""

from __future__ import annotations

import http.server
import json
import os
import shlex
import shutil
import ssl
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from bollard.agent.config import AgentConfigError, tls_context
from bollard.cli.certs import CertFiles, ensure_local_tls, issue, make_ca, server_hosts
from bollard.cli.client import CliError, TlsFiles, resolve_tls, ssl_context
from bollard.cli.context import Context, save_context
from tests.e2e.conftest import Cli, free_port, local_cluster, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]
# A PATH without the venv's bin directory: as in a shell where it is not activated.
NO_VENV_PATH = os.pathsep.join(
    p for p in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep)
    if Path(p).resolve() != Path(sys.executable).parent.resolve()
)  # fmt: skip


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _other_ca(tmp: Path) -> CertFiles:
    """A CA that has nothing to do with the cluster's."""
    files = CertFiles(tmp / "other-ca.pem", tmp / "other-ca.key")
    make_ca(files, "Unrelated CA")
    return files


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


@contextmanager
def _agent(cli: Cli, node: str, *args: str) -> Iterator[Path]:
    """`bollard agent` for a freshly enrolled ``node`` with ``args``; yields its log."""
    home = cli.data_dir.parent / "extra" / node
    home.mkdir(parents=True)
    cli.ok("node", "add", node, "--token-file", str(home / "token"))
    log = home / "agent.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bollard", "agent", "--server", cli.cluster().url,
             "--node", node, "--token-file", str(home / "token"), "--driver", "sim",
             "--state-dir", str(home / "state"), "--fabric-dir", str(cli.data_dir / "fabric"),
             *args],
            env=cli.env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        yield log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


def _log_says(log: Path, text: str) -> bool:
    return text in log.read_text(errors="replace")


def _connected(cli: Cli, node: str) -> bool:
    return bool(cli.json("node", "show", node)["connected"])


def test_local_ca_is_made_once_then_reused(tmp_path: Path) -> None:
    first = ensure_local_tls(tmp_path, "127.0.0.1")
    assert _mode(first.directory) == 0o700
    assert _mode(first.ca.key) == 0o600 and _mode(first.server.key) == 0o600
    ca, server = first.ca.cert.read_bytes(), first.server.cert.read_bytes()
    again = ensure_local_tls(tmp_path, "127.0.0.1")
    assert (again.ca.cert.read_bytes(), again.server.cert.read_bytes()) == (ca, server)
    # Another listen host: same CA, a server certificate that names it.
    other = ensure_local_tls(tmp_path, "127.0.0.9")
    assert other.ca.cert.read_bytes() == ca
    assert other.server.cert.read_bytes() != server
    assert "127.0.0.9" in server_hosts("127.0.0.9") and "localhost" in server_hosts("127.0.0.9")
    context = ssl.create_default_context(cafile=str(other.ca.cert))
    context.load_cert_chain(other.server.cert, other.server.key)  # the key fits the cert


def test_cli_and_agent_tls_settings_never_fall_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BOLLARD_CONFIG_DIR", str(tmp_path / "config"))
    for name in ("BOLLARD_CA_FILE", "BOLLARD_CLIENT_CERT", "BOLLARD_CLIENT_KEY"):
        monkeypatch.delenv(name, raising=False)
    tls = ensure_local_tls(tmp_path, "127.0.0.1")
    ca = str(tls.ca.cert)
    save_context(Context(url="https://127.0.0.1:8700", data_dir=str(tmp_path), token_file="t",
                         ca_file=ca))  # fmt: skip
    # The context's CA is for the context's server only.
    assert resolve_tls("https://127.0.0.1:8700") == TlsFiles(ca_file=ca)
    assert resolve_tls("https://elsewhere:8700") == TlsFiles()
    monkeypatch.setenv("BOLLARD_CA_FILE", "/nope.pem")
    assert resolve_tls("https://elsewhere:8700").ca_file == "/nope.pem"
    with pytest.raises(CliError, match="an https URL needs a CA"):
        ssl_context("https://elsewhere:8700", TlsFiles())
    with pytest.raises(CliError, match=r"the CA file /nope\.pem does not exist"):
        ssl_context("https://elsewhere:8700", TlsFiles(ca_file="/nope.pem"))
    with pytest.raises(CliError, match="is plain http"):
        ssl_context("http://elsewhere:8700", TlsFiles(ca_file=ca))
    with pytest.raises(CliError, match="the key does not belong to the certificate"):
        ssl_context("https://h:1", TlsFiles(ca, str(tls.server.cert), str(tls.ca.key)))
    verified = ssl_context("https://h:1", TlsFiles(ca_file=ca))
    assert verified is not None and verified.verify_mode == ssl.CERT_REQUIRED
    assert verified.check_hostname
    # The agent: the same rules, its own flags.
    with pytest.raises(AgentConfigError, match="an https server needs --ca-file"):
        tls_context("https://h:1", None)
    with pytest.raises(AgentConfigError, match="are for https servers"):
        tls_context("http://h:1", ca)
    with pytest.raises(AgentConfigError, match="--client-cert and --client-key go together"):
        tls_context("https://h:1", ca, client_cert=tls.server.cert)
    agent = tls_context("wss://h:1", ca)
    assert agent is not None and agent.verify_mode == ssl.CERT_REQUIRED and agent.check_hostname


def test_server_tls_flags_fail_in_one_line(tmp_path: Path) -> None:
    tls = ensure_local_tls(tmp_path / "a", "127.0.0.1")
    stranger = ensure_local_tls(tmp_path / "b", "127.0.0.1")
    base = [sys.executable, "-m", "bollard", "server", "--data-dir", str(tmp_path / "d"),
            "--listen", f"127.0.0.1:{free_port()}"]  # fmt: skip
    cases = {
        "--tls-cert and --tls-key go together": ["--tls-cert", str(tls.server.cert)],
        "the key": ["--tls-cert", str(tls.server.cert), "--tls-key", str(stranger.server.key)],
        "needs --tls-cert": ["--tls-client-ca", str(tls.ca.cert)],
    }
    for expected, args in cases.items():
        result = subprocess.run([*base, *args], capture_output=True, text=True, timeout=60)
        assert result.returncode != 0
        lines = result.stderr.strip().splitlines()
        assert lines[-1].startswith("error: ") and expected in lines[-1], result.stderr
        assert "Traceback" not in result.stderr


def test_up_cluster_is_tls_end_to_end(tmp_path: Path) -> None:
    with local_cluster(tmp_path, "--nodes", "2", "--sim-latency", "0.05") as cli:
        record = cli.cluster()
        url, port = record.url, _port(record.url)
        assert url.startswith("https://127.0.0.1:")
        tls = cli.data_dir / "tls"
        assert _mode(tls) == 0o700
        assert {p.name: _mode(p) for p in tls.glob("*.key")} == {
            "ca.key": 0o600,
            "server.key": 0o600,
        }
        context = json.loads((tmp_path / "config" / "context.json").read_text())
        assert context["url"] == url and context["ca_file"] == str(tls / "ca.pem")

        # The CLI trusts the server through the context's CA.
        assert url in cli.ok("status")
        cli.ok("vm", "create", "web1", "--vcpus", "1", "--memory", "64", "--start", "--wait")
        assert cli.json("vm", "show", "web1")["status"] == "ACTIVE"
        # The agents dialled wss:// and verified the server with the cluster's CA.
        for proc in record.processes:
            if proc.name != "server":
                assert "--ca-file" in proc.argv
                assert _log_says(Path(proc.log), "connected to wss://127.0.0.1:")
        # Plain HTTP on the port gets no answer; HTTPS without the CA is not trusted.
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"{url}/healthz", timeout=5)
        trusted = ssl.create_default_context(cafile=str(tls / "ca.pem"))
        assert httpx.get(f"{url}/healthz", verify=trusted, timeout=5).status_code == 200

        # The CLI's errors: one line each, naming the URL, the CA, what to do.
        other = _other_ca(tmp_path)
        wrong = cli.one_line_error("status", env={"BOLLARD_CA_FILE": str(other.cert)})
        assert f"the server's certificate is not trusted by CA {other.cert}" in wrong
        localhost = f"https://localhost:{port}"  # not the context's URL: no CA from it
        missing = cli.one_line_error("status", env={"BOLLARD_URL": localhost})
        assert "an https URL needs a CA: set BOLLARD_CA_FILE" in missing
        token = str(cli.data_dir / "admin.token")
        env = {"BOLLARD_URL": localhost, "BOLLARD_CA_FILE": str(tls / "ca.pem")}
        ok = cli.run("status", env={**env, "BOLLARD_TOKEN_FILE": token})
        assert ok.returncode == 0 and localhost in ok.stdout, ok.stderr
        plain = cli.one_line_error("status", env={"BOLLARD_URL": f"http://127.0.0.1:{port}"})
        assert f"http://127.0.0.1:{port}" in plain and f"use https://127.0.0.1:{port}" in plain
        odd = cli.one_line_error("status", env={"BOLLARD_URL": f"127.0.0.1:{port}"})
        assert "BOLLARD_URL must look like https://HOST:PORT" in odd
        unknown = cli.one_line_error(
            "status", env={**env, "BOLLARD_URL": "https://no-such-host.invalid:1"}
        )
        assert "unknown host 'no-such-host.invalid'" in unknown

        # An agent that trusts another CA is refused, says why, and never connects.
        with _agent(cli, "rogue", "--ca-file", str(other.cert)) as log:
            wait_until(
                "the rogue agent logs the refusal",
                lambda: _log_says(
                    log, f"the server's certificate is not trusted by CA {other.cert}"
                ),
            )
            assert not _connected(cli, "rogue")
            assert not _log_says(log, "/agent/ws (incarnation")  # the "connected to" line
        # Without --ca-file an https server is refused at start, in one line.
        agent = ["agent", "--server", url, "--node", "x", "--token-file", "/dev/null"]
        result = cli.run(*agent, "--state-dir", str(tmp_path / "x"), "--fabric-dir", str(tmp_path))
        assert result.returncode != 0 and "an https server needs --ca-file" in result.stderr

        # The fleet simulator works over TLS too (its agents dial wss://, its API client
        # verifies the server with the context's CA).
        fleet = cli.json("fleet", "--nodes", "2", "--vms-per-node", "1", "--prefix", "tlsfleet",
                         "--duration", "0", "--quiet", timeout=120)  # fmt: skip
        assert fleet["phase"] == "stopped" and fleet["vms_created"] == 2, fleet


def test_client_certificates_are_required_with_client_certs(tmp_path: Path) -> None:
    with local_cluster(tmp_path, "--nodes", "1", "--client-certs") as cli:
        record = cli.cluster()
        url, port = record.url, _port(record.url)
        tls = cli.data_dir / "tls"
        server = record.find("server")
        assert server is not None and "--tls-client-ca" in server.argv
        context = json.loads((tmp_path / "config" / "context.json").read_text())
        assert context["client_cert"] == str(tls / "client-cli.pem")
        assert _mode(tls / "client-cli.key") == 0o600
        cli.ok("status")  # the CLI presents the context's client certificate

        # A CLI without a client certificate (not the context's URL, so none from it).
        localhost = f"https://localhost:{port}"
        bare = cli.one_line_error(
            "status", env={"BOLLARD_URL": localhost, "BOLLARD_CA_FILE": str(tls / "ca.pem")}
        )
        assert "may require a client certificate" in bare and "BOLLARD_CLIENT_CERT" in bare

        # Agents: none, or one from another CA, cannot connect; one from the cluster's can.
        other = _other_ca(tmp_path)
        stranger = CertFiles(tmp_path / "stranger.pem", tmp_path / "stranger.key")
        issue(other, stranger, "stranger", client=True)
        ca_args = ("--ca-file", str(tls / "ca.pem"))
        with _agent(cli, "nocert", *ca_args) as log:
            wait_until(
                "the agent without a certificate is turned away",
                lambda: _log_says(log, "does the server require a client certificate?"),
            )
            assert not _connected(cli, "nocert")
        cert_args = ("--client-cert", str(stranger.cert), "--client-key", str(stranger.key))
        with _agent(cli, "stranger", *ca_args, *cert_args) as log:
            wait_until(
                "the agent with a foreign certificate is turned away",
                lambda: _log_says(log, "does the server accept the client certificate"),
            )
            assert not _connected(cli, "stranger")
        good = CertFiles(tmp_path / "good.pem", tmp_path / "good.key")
        issue(CertFiles(tls / "ca.pem", tls / "ca.key"), good, "good", client=True)
        good_args = ("--client-cert", str(good.cert), "--client-key", str(good.key))
        with _agent(cli, "good", *ca_args, *good_args):
            wait_until(
                "the agent with a certificate from the CA connects", lambda: _connected(cli, "good")
            )
        # The fleet presents the context's client certificate too.
        fleet = cli.json("fleet", "--nodes", "1", "--vms-per-node", "0", "--prefix", "certfleet",
                         "--duration", "0", "--quiet", timeout=120)  # fmt: skip
        assert fleet["phase"] == "stopped" and fleet["nodes"] == 1, fleet
        assert url == cli.cluster().url


class _PlainHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep the test's output clean


def test_https_url_to_a_plain_http_server_says_so(tmp_path: Path) -> None:
    plain = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _PlainHandler)
    thread = threading.Thread(target=plain.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"https://127.0.0.1:{plain.server_address[1]}"
        tls = ensure_local_tls(tmp_path, "127.0.0.1")
        env = {k: v for k, v in os.environ.items() if not k.startswith("BOLLARD_")}
        env.update(BOLLARD_CONFIG_DIR=str(tmp_path / "config"), BOLLARD_URL=url,
                   BOLLARD_TOKEN="t", BOLLARD_CA_FILE=str(tls.ca.cert))  # fmt: skip
        result = subprocess.run([sys.executable, "-m", "bollard", "status"], env=env,
                                capture_output=True, text=True, timeout=60)  # fmt: skip
        assert result.returncode == 1
        assert result.stderr.strip() == (
            f"error: the server at {url} does not speak HTTPS (WRONG_VERSION_NUMBER);"
            f" is it http://127.0.0.1:{plain.server_address[1]}?"
        )
    finally:
        plain.shutdown()
        plain.server_close()


def test_make_up_takes_args() -> None:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    result = subprocess.run(
        ["make", "-n", "-C", str(REPO), "up", "ARGS=--port 9000 --data-dir /tmp/x"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    up = [line for line in result.stdout.splitlines() if "bollard up" in line]
    assert up and up[-1].endswith("bollard up --nodes 3 --detach --port 9000 --data-dir /tmp/x")


def test_up_hint_works_without_the_venv_and_down_forgets_the_context(tmp_path: Path) -> None:
    config = tmp_path / "config"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOLLARD_")}
    env.update(BOLLARD_CONFIG_DIR=str(config), PATH=NO_VENV_PATH, PYTHONUNBUFFERED="1")
    data = tmp_path / "data"
    cli = Cli(env=env, data_dir=data)
    up = ["up", "--detach", "--nodes", "1", "--data-dir", str(data)]
    try:
        started = cli.run(*up, "--port", str(free_port()), timeout=120)
        assert started.returncode == 0, started.stderr
        lines = started.stdout.splitlines()
        hint = lines[lines.index("Try:") + 1 :]
        status_line = next(line.strip() for line in hint if line.strip().endswith(" status"))
        # Not a bare `bollard`: that is not on this PATH.
        assert status_line.split()[0] != "bollard"
        ran = subprocess.run(shlex.split(status_line), env=env, capture_output=True, text=True,
                             timeout=60)  # fmt: skip
        assert ran.returncode == 0 and cli.cluster().url in ran.stdout, ran.stderr
        assert any(line.strip().startswith("source ") for line in hint)
        ca = (data / "tls" / "ca.pem").read_bytes()

        down = cli.run("down")
        assert down.returncode == 0 and "removed the CLI context" in down.stdout, down.stderr
        assert not (config / "context.json").exists()
        gone = cli.one_line_error("status")
        assert "no Bollard server configured" in gone

        # A second `up` on the same data dir reuses the CA (agents and CLIs keep trusting it).
        again = cli.run(*up, "--port", str(free_port()), timeout=120)
        assert again.returncode == 0, again.stderr
        assert (data / "tls" / "ca.pem").read_bytes() == ca
        cli.ok("status")
    finally:
        cli.run("down", "--data-dir", str(data), timeout=60)
