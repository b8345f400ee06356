"""One agent's link to the server: dial, hello/welcome, heartbeats, commands, reconnects."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from pydantic import BaseModel, ValidationError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidMessage, InvalidStatus, WebSocketException

import bollard
from bollard.agent.config import SYSTEM_CA, AgentConfig, config_tls, ws_url
from bollard.agent.drivers.base import (
    HypervisorDriver,
    LoadSource,
    MigrationEndpoint,
    PartitionSource,
    StateWatcher,
)
from bollard.agent.executor import Executor
from bollard.agent.host_shutdown import ShutdownNotice
from bollard.agent.image_ops import ImageServer
from bollard.agent.journal import CommandJournal, JournalError
from bollard.agent.reports import Reporter
from bollard.agent.seq import SeqCounter
from bollard.agent.servers import ServerRotation
from bollard.agent.sriov_agent import AgentSriov
from bollard.agent.tunnel import Tunnels
from bollard.domain.errors import DriverError
from bollard.domain.protocol import (
    AGENT_PROTOCOLS,
    Ack,
    Answer,
    Cancel,
    Command,
    ErrorMsg,
    Hello,
    HostShutdownReady,
    Inspect,
    Query,
    Resync,
    ServerMessageT,
    StorageQuery,
    TunnelOpen,
    Welcome,
    offered_protocols,
    server_message,
)

log = logging.getLogger(__name__)

MAX_MESSAGE = 16 * 1024 * 1024
# Journal entries per heartbeat at most (the rest follow in the next ones, oldest first).
JOURNAL_PER_HEARTBEAT = 256
# How often a partition flag is read while connected (and at least once per heartbeat), and
# while partitioned, how often to look whether it was lifted.
PARTITION_POLL = 0.25
# A welcomed session that lasted this long (seconds) starts the reconnect backoff over.
STABLE_SESSION = 30.0

_HOSTNAME_MISMATCH = 62  # X509_V_ERR_HOSTNAME_MISMATCH
# OpenSSL's reasons when the peer answered a TLS handshake with something that is not TLS.
_NOT_TLS = ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG")

# Whether this host is cut off from the server (a simulated network partition, see the
# driver's ``PartitionSource``): while it is, the agent holds no connection and does not dial.
PartitionCheck = Callable[[], Awaitable[bool]]


def driver_partition_check(driver: HypervisorDriver) -> PartitionCheck | None:
    """The driver's partition flag (the sim driver has one); None for drivers without."""
    return driver.partitioned if isinstance(driver, PartitionSource) else None


def tls_problem(exc: BaseException, config: AgentConfig, url: str | None = None) -> str | None:
    """Why TLS with the server at ``url`` (the configured one by default) failed, in one
    line; None if ``exc`` is not about TLS."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ssl.SSLError) and id(cause) not in seen:
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    if not isinstance(cause, ssl.SSLError):
        return None
    if isinstance(cause, ssl.SSLCertVerificationError):
        why = cause.verify_message or cause.reason
        if cause.verify_code == _HOSTNAME_MISMATCH:
            host = url or config.server_url
            return f"the server's certificate does not name the host of {host}: {why}"
        trust = f"CA {config.ca_file}"
        if config.ca_file == SYSTEM_CA:
            trust = "the system's trust store"
        return f"the server's certificate is not trusted by {trust}: {why}"
    reason = str(cause.reason or cause)
    if "CERTIFICATE_REQUIRED" in reason:
        return "the server requires a client certificate (--client-cert and --client-key)"
    if "UNKNOWN_CA" in reason or "BAD_CERTIFICATE" in reason:
        return (
            f"the server refused this agent's client certificate {config.client_cert}"
            f" ({reason}): it is not from the CA the server trusts"
        )
    if reason in _NOT_TLS:
        return f"the server does not speak TLS ({reason}): does its URL start with http://?"
    return f"TLS with the server failed: {reason}"


def closed_hint(exc: BaseException, config: AgentConfig, url: str | None = None) -> str:
    """What a server (at ``url``, the configured one by default) that hung up before
    answering the WebSocket handshake may mean."""
    if not isinstance(exc, InvalidMessage):
        return ""
    if not (url or config.server_url).startswith(("https:", "wss:")):
        return " (if the server speaks HTTPS, use an https:// URL and --ca-file)"
    if config.client_cert is not None:
        return f" (does the server accept the client certificate {config.client_cert}?)"
    return " (does the server require a client certificate? --client-cert, --client-key)"


class _SessionEnded(Exception):
    """The current connection is over (closed, broken or refused); reconnect."""


class _VersionRefused(_SessionEnded):
    """The server does not speak this agent's protocol version: retry only slowly (until
    one of them is upgraded)."""


class Outbox:
    """Sends to the current connection, one message at a time, each with a deadline."""

    def __init__(self, send_timeout: float) -> None:
        self.send_timeout = send_timeout
        self.ws: ClientConnection | None = None
        self._lock = asyncio.Lock()

    async def send(self, msg: BaseModel) -> bool:
        """True once sent; False (logged) if there is no usable connection."""
        ws = self.ws
        if ws is None:
            log.info("not connected; %s not sent", getattr(msg, "type", "message"))
            return False
        try:
            async with self._lock, asyncio.timeout(self.send_timeout):
                await ws.send(msg.model_dump_json())
        except (WebSocketException, OSError, TimeoutError) as exc:
            log.warning("sending %s failed: %s", getattr(msg, "type", "message"), exc)
            return False
        return True


class AgentSession:
    def __init__(
        self,
        config: AgentConfig,
        token: str,
        driver: HypervisorDriver,
        seq: SeqCounter,
        incarnation: str,
        journal: CommandJournal | None = None,
        rng: random.Random | None = None,
        partitioned: PartitionCheck | None = None,
        tls: ssl.SSLContext | None = None,
        sriov: AgentSriov | None = None,
    ) -> None:
        self.config = config
        # The servers to dial in turn; ``url`` is the WebSocket URL of the current one.
        self.servers = ServerRotation(
            config.server_urls, initial=config.backoff_initial, maximum=config.backoff_max
        )
        self.url = ws_url(self.servers.current)
        self._dialled: str | None = None  # the server of the last attempt
        self._token = token
        # ``tls``: a context shared by many sessions (the fleet); else the config's.
        self._tls = tls or config_tls(config)
        self.driver = driver
        self.seq = seq
        # The heartbeats carry the SR-IOV PFs too (agent/reports.py).
        self.reporter = Reporter(driver, seq, sriov)
        self.incarnation = incarnation
        self.heartbeat_interval = 10.0
        self.protocol = min(AGENT_PROTOCOLS)  # as the welcome said
        self.outbox = Outbox(config.send_timeout)
        self._beat_now = asyncio.Event()
        if isinstance(driver, StateWatcher):
            # A change behind the agent's back (e.g. `virsh destroy`) is reported at once.
            driver.on_change(self._beat_now.set)
        self.executor = Executor(
            driver, self.outbox.send, self._beat_now.set, journal,
            images=ImageServer(config.server_url, token, self._tls), sriov=sriov,
        )  # fmt: skip
        # The host's SR-IOV PFs go in every hello (None: this agent reports none).
        self.sriov = sriov
        self.journal = self.executor.journal
        self._headers = {"Authorization": f"Bearer {token}"}
        self._rng = rng or random.Random()
        self._pending_refusals: set[asyncio.Task[bool]] = set()
        self._welcomed = False
        self._welcomed_at = 0.0  # time.monotonic() of the last welcome
        self._partition_check = partitioned or driver_partition_check(driver)
        # Console tunnels (agent/tunnel.py): each on a connection and in a task of its own.
        self.tunnels = Tunnels(
            config,
            self._headers,
            driver,
            self.outbox.send,
            self._tls,
            current_server=lambda: self.servers.current,
        )
        # A clean shutdown of the host this agent announced (agent/host_shutdown.py).
        self.shutdown = ShutdownNotice()

    async def run(self) -> None:
        """Stay connected until cancelled, reconnecting with exponential backoff and jitter.

        Cancel hooks: at start (the agent restarted) and whenever a connection that the
        server welcomed ends, hypervisor jobs that must not run unsupervised are aborted.

        While the host is partitioned (see ``PartitionCheck``) no connection is attempted;
        once the partition is lifted, the agent dials at once.
        """
        await self._cancel_hook("agent restarted")
        while True:
            self._welcomed = False
            if await self._partitioned():
                await self._wait_healed()
                self.servers.restart()
            self._aim()
            try:
                await self._connect_once()
            except _VersionRefused as exc:
                log.error("server %s refused this agent: %s", self.url, exc)
                self.servers.slow()
            except _SessionEnded as exc:
                log.warning("connection to %s ended: %s", self.url, exc)
            except InvalidStatus as exc:
                status = exc.response.status_code
                if status in (401, 403):
                    log.error(
                        "server refused this node's token (HTTP %d); check the token file",
                        status,
                    )
                else:
                    log.warning("server refused the connection: HTTP %d", status)
            except (OSError, WebSocketException, TimeoutError) as exc:
                problem = tls_problem(exc, self.config, self.servers.current)
                if problem is not None:
                    log.error("TLS refused, not connected to %s: %s", self.url, problem)
                else:
                    what = "connection to %s lost" if self._welcomed else "cannot connect to %s"
                    hint = closed_hint(exc, self.config, self.servers.current)
                    log.warning(what + ": %s%s", self.url, exc or type(exc).__name__, hint)
            except DriverError as exc:
                log.warning("cannot read host info from the driver: %s", exc)
            except Exception:
                log.exception("connection to %s failed unexpectedly", self.url)
            stable = False
            if self._welcomed:
                await self._cancel_hook("lost the server connection")
                stable = time.monotonic() - self._welcomed_at >= STABLE_SESSION
                # if not, the backoff keeps growing: sessions that end as soon as they are
                # made (an overloaded server whose keepalive pings time out, a server that
                # drops the node at once) are paced like failed dials, so that a thousand
                # agents do not keep reconnecting together every few tenths of a second
            delay = self.servers.failed(stable=stable)  # and on to the next server
            wait = self._rng.uniform(delay / 2, delay)
            log.info("reconnecting in %.2fs", wait)
            await asyncio.sleep(wait)  # backoff

    def _aim(self) -> None:
        """Point the session at the server to dial now; its console tunnels and image
        transfers go to the same server."""
        url = self.servers.current
        if url == self._dialled:
            return
        index, count = self.servers.position()
        if self._dialled is not None or count > 1:
            log.info("connecting to %s (%d of %d)", url, index, count)
        self._dialled = url
        self.url = ws_url(url)
        self.tunnels.config = replace(self.config, server_url=url)
        self.executor.images = ImageServer(url, self._token, self._tls)

    async def aclose(self) -> None:
        await self.tunnels.aclose()
        await self.executor.aclose()

    async def _cancel_hook(self, reason: str) -> None:
        try:
            await self.executor.run_cancel_hook(reason)
        except Exception:  # a bug here must not stop the agent from reconnecting
            log.exception("cancel hook (%s) failed", reason)

    async def _partitioned(self) -> bool:
        if self._partition_check is None:
            return False
        try:
            return await self._partition_check()
        except Exception:  # a broken check must not keep the agent from its server
            log.exception("cannot check for a partition")
            return False

    async def _wait_healed(self) -> None:
        log.warning("partitioned from the server: not connecting until the partition heals")
        while await self._partitioned():
            await asyncio.sleep(PARTITION_POLL)  # a periodic look at the flag
        log.warning("partition healed: reconnecting")

    async def _partition_watch(self) -> None:
        """Ends the session as soon as the host is partitioned."""
        while not await self._partitioned():
            await asyncio.sleep(min(PARTITION_POLL, self.heartbeat_interval))  # periodic
        raise _SessionEnded("partitioned from the server")

    async def _connect_once(self) -> None:
        """One connection, from dial to drop (``_welcomed`` tells if the server welcomed us)."""
        info = await self.driver.host_info()
        tls: dict[str, Any] = {} if self._tls is None else {"ssl": self._tls}
        async with connect(
            self.url,
            additional_headers=self._headers,
            open_timeout=self.config.connect_timeout,
            close_timeout=2,
            proxy=None,
            max_size=MAX_MESSAGE,
            user_agent_header=f"bollard-agent/{bollard.__version__}",
            **tls,
        ) as ws:
            hello = Hello(
                node=self.config.node,
                protocol=min(AGENT_PROTOCOLS),
                protocols=list(AGENT_PROTOCOLS),
                incarnation=self.incarnation,
                boot_id=info.boot_id,
                driver=self.driver.name,
                capacity=info.capacity,
                agent_version=bollard.__version__,
                migration_endpoint=(
                    self.driver.migration_endpoint()
                    if isinstance(self.driver, MigrationEndpoint)
                    else None
                ),
                journal_entries=len(self.journal),
                corrupt_entries=self.journal.corrupt_entries,
                shutting_down=self.shutdown.kind,
                sriov=None if self.sriov is None else await self.sriov.report(),
            )
            async with asyncio.timeout(self.config.send_timeout):
                await ws.send(hello.model_dump_json())
            async with asyncio.timeout(self.config.connect_timeout):
                first = await ws.recv()
            msg = self._parse(first)
            if isinstance(msg, ErrorMsg) and msg.code == "protocol-version":
                raise _VersionRefused(msg.message)
            if isinstance(msg, ErrorMsg):
                self._log_error(msg)
                raise _SessionEnded(f"server answered hello with error {msg.code}")
            if not isinstance(msg, Welcome):
                raise _SessionEnded("server did not answer hello with welcome")
            self._negotiate(msg, hello)
            self._welcome(msg)
            self._welcomed = True
            self._welcomed_at = time.monotonic()
            log.info(
                "connected to %s (incarnation %s, protocol %d)",
                self.url, self.incarnation, self.protocol,
            )  # fmt: skip
            self.outbox.ws = ws
            shutdown = self.shutdown.message()
            if shutdown is not None:  # announced, not answered yet: the new session is told
                await self.outbox.send(shutdown)
            try:
                await self._serve(ws)
            finally:
                self.outbox.ws = None

    async def _serve(self, ws: ClientConnection) -> None:
        beats = asyncio.create_task(self._heartbeat_loop(), name="heartbeats")
        receive = asyncio.create_task(self._receive_loop(ws), name="receive")
        tasks = {beats, receive}
        if self._partition_check is not None:
            tasks.add(asyncio.create_task(self._partition_watch(), name="partition-watch"))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            exc = task.exception()
            if exc is not None:
                raise exc
        raise _SessionEnded("connection closed")

    async def _heartbeat_loop(self) -> None:
        self.reporter.reset()  # a new session: its first report is full
        while True:
            self._beat_now.clear()
            if await self._partitioned():
                raise _SessionEnded("partitioned from the server")
            beats = await self.reporter.build(
                self.journal.unacked(JOURNAL_PER_HEARTBEAT), await self._load()
            )
            for beat in beats:
                if not await self.outbox.send(beat):
                    raise _SessionEnded("heartbeat could not be sent")
            try:
                async with asyncio.timeout(self.heartbeat_interval):
                    await self._beat_now.wait()
            except TimeoutError:
                pass

    async def _load(self) -> float | None:
        if not isinstance(self.driver, LoadSource):
            return None
        try:
            return await self.driver.load()
        except DriverError as exc:
            log.warning("cannot read the host load: %s", exc)
            return None

    async def _receive_loop(self, ws: ClientConnection) -> None:
        async for raw in ws:
            msg = self._parse(raw)
            if isinstance(msg, Command):
                self.executor.submit(msg)
            elif isinstance(msg, Ack):
                self._ack(msg)
            elif isinstance(msg, Query):
                self.executor.query(msg)
            elif isinstance(msg, Inspect):
                self.executor.inspect(msg)
            elif isinstance(msg, StorageQuery):
                self.executor.storage_query(msg)
            elif isinstance(msg, Cancel):
                self.executor.cancel(msg.command_id)
            elif isinstance(msg, TunnelOpen):
                self.tunnels.open(msg)
            elif isinstance(msg, Resync):
                log.info("server asks for a full report: %s", msg.reason)
                self.reporter.reset()
                self._beat_now.set()
            elif isinstance(msg, Welcome):
                self._welcome(msg)
            elif isinstance(msg, HostShutdownReady):
                self.shutdown.on_ready(msg)
            elif isinstance(msg, ErrorMsg):
                self._log_error(msg)
                self.shutdown.on_error(msg)

    def _ack(self, msg: Ack) -> None:
        pruned = self.journal.ack(msg.entries)
        if pruned:
            log.debug("journal: %d acknowledged entries pruned", pruned)

    def _parse(self, raw: str | bytes) -> ServerMessageT | None:
        try:
            return server_message.validate_json(raw)
        except ValidationError as exc:
            text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
            log.warning(
                "ignoring malformed message from server (%d errors): %.200s",
                exc.error_count(),
                text,
            )
            self._refuse_bad_command(text, exc)
            return None

    def _refuse_bad_command(self, text: str, exc: ValidationError) -> None:
        """A command we cannot parse but whose id we can read gets a failed answer."""
        try:
            data: Any = json.loads(text)
        except ValueError:
            return
        if not (isinstance(data, dict) and data.get("type") == "command"):
            return
        cid = data.get("id")
        if not (isinstance(cid, str) and cid):
            return
        answer: Answer | None = self.journal.answer_for(cid)
        if answer is None and cid not in self.journal:
            message = f"malformed command: {exc.error_count()} validation errors"
            vm = data.get("vm_uuid")
            try:
                # Journaled, so that the id stays refused even if it comes back well-formed.
                entry = self.journal.record_failed(
                    cid,
                    "invalid-input",
                    message,
                    note="malformed command",
                    vm_uuid=vm if isinstance(vm, str) else None,
                )
            except JournalError as err:
                log.error("malformed command %s: cannot journal its refusal: %s", cid, err)
                return
            answer = Answer(command_id=cid, ok=False, error=entry.error)
        if answer is not None:
            task = asyncio.create_task(self.outbox.send(answer))
            self._pending_refusals.add(task)
            task.add_done_callback(self._pending_refusals.discard)

    def _negotiate(self, msg: Welcome, hello: Hello) -> None:
        """The protocol version of the session, as the welcome chose it among the hello's."""
        chosen = hello.protocol if msg.protocol is None else msg.protocol
        if chosen not in offered_protocols(hello):
            raise _VersionRefused(
                f"the server chose agent protocol {chosen}, which this agent does not speak "
                f"(it speaks {', '.join(str(v) for v in sorted(offered_protocols(hello)))})"
            )
        self.protocol = chosen

    def _welcome(self, msg: Welcome) -> None:
        self.servers.learn(msg.servers)
        if msg.heartbeat_interval > 0:
            self.heartbeat_interval = msg.heartbeat_interval
        else:
            log.warning("ignoring heartbeat interval %s", msg.heartbeat_interval)

    def _log_error(self, msg: ErrorMsg) -> None:
        if msg.code == "unauthorized":
            log.error("server says unauthorized: %s (check the token file)", msg.message)
        else:
            log.warning("server error %s: %s", msg.code, msg.message)
