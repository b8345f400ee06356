"""Journal crash safety: SIGKILL a writer at random points; the journal always loads and no
answer the writer reported as recorded is lost.

A forked child runs the real journal code: it opens the journal (recovering what the last
child left), then records commands RECEIVED → STARTED → PROCESSING → COMPLETED in a loop,
acknowledging and pruning them in small batches (so the finished log is appended to and
compacted too), and writes each command id to a pipe only after ``finish`` returned. The
parent kills it at a random moment, then opens the journal itself and checks it.

Replay a failure with BOLLARD_CRASH_SEED=<seed printed by the test>.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import select
import signal
import time
from pathlib import Path

from bollard.agent.journal import CommandJournal
from bollard.domain.commands import AGENT_ON_RESTART, AgentCommandState
from bollard.domain.protocol import Answer, Command

S = AgentCommandState
KEEP = 40  # finished records kept: small, so trimming and compaction happen all the time
SLACK = 8
BUDGET = 8.0  # seconds of killing
MAX_ROUNDS = 400
# At least this much is exercised: on a loaded machine (parallel test workers) killing goes on
# past BUDGET until it is, or until HARD_DEADLINE.
MIN_ROUNDS, MIN_REPORTED, MIN_RECOVERED = 20, 50, 1
HARD_DEADLINE = 90.0


def _open(root: Path) -> CommandJournal:
    return CommandJournal.open(root, keep_finished=KEEP, compact_slack=SLACK)


def _writer(root: str, start: int, fd: int) -> None:
    journal = _open(Path(root))
    batch: list[str] = []
    i = start
    while True:
        cid = f"c{i:06d}"
        i += 1
        if cid in journal:  # recorded by a child killed before it could report it
            continue
        journal.record_received(Command(id=cid, command="start", vm_uuid="vm", timeout=5))  # type: ignore[arg-type]
        journal.advance(cid, S.STARTED)
        journal.advance(cid, S.PROCESSING)
        journal.finish(cid, Answer(command_id=cid, ok=True, result={"n": cid}))
        os.write(fd, f"{cid}\n".encode())
        batch.append(cid)
        if len(batch) == 3:
            journal.ack(dict.fromkeys(batch, S.COMPLETED))
            batch.clear()


def _read_available(fd: int, deadline: float | None) -> bytes:
    """What the pipe holds now; with a deadline, wait (until then) for at least something."""
    chunks = []
    while True:
        timeout = 0.0 if deadline is None else max(0.0, deadline - time.monotonic())
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            return b"".join(chunks)
        data = os.read(fd, 65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)
        deadline = None


def test_sigkill_at_random_points_never_loses_a_recorded_answer(tmp_path: Path) -> None:
    seed = int(os.environ.get("BOLLARD_CRASH_SEED", random.randrange(1 << 30)))
    print(f"journal crash test seed: {seed} (replay with BOLLARD_CRASH_SEED={seed})")
    rng = random.Random(seed)
    root = tmp_path / "journal"
    ctx = multiprocessing.get_context("fork")
    reported: list[str] = []
    rounds = recovered = 0
    began = time.monotonic()

    def go_on() -> bool:
        elapsed = time.monotonic() - began
        too_little = rounds < MIN_ROUNDS or len(reported) < MIN_REPORTED
        too_little = too_little or recovered < MIN_RECOVERED
        return rounds < MAX_ROUNDS and (
            elapsed < BUDGET or (too_little and elapsed < HARD_DEADLINE)
        )

    while go_on():
        rounds += 1
        read_fd, write_fd = os.pipe()
        start = int(reported[-1][1:]) + 1 if reported else 0
        child = ctx.Process(target=_writer, args=(str(root), start, write_fd), daemon=True)
        child.start()
        os.close(write_fd)
        buffer = b""
        try:
            if rng.random() < 0.25:
                time.sleep(rng.uniform(0, 0.004))  # nemesis: kill while it opens/recovers
            else:
                buffer += _read_available(read_fd, time.monotonic() + 10)  # it is writing
                time.sleep(rng.uniform(0, 0.03))  # nemesis: a random point mid-loop
            assert child.pid is not None
            os.kill(child.pid, signal.SIGKILL)
            child.join(timeout=10)
            assert child.exitcode == -signal.SIGKILL, f"writer ended by itself: {child.exitcode}"
            buffer += _read_available(read_fd, None)
        finally:
            if child.is_alive():
                child.kill()
            os.close(read_fd)
        assert buffer == b"" or buffer.endswith(b"\n")
        reported += buffer.decode().split()

        journal = _open(root)  # must always load
        assert journal.corrupt_entries == 0, f"round {rounds} (seed {seed})"
        recovered += len(journal.recovered)
        for entry in journal.entries():
            assert entry.state not in AGENT_ON_RESTART, entry
        for cid in reported[-KEEP:]:
            answer = journal.answer_for(cid)
            assert answer is not None, f"answer of {cid} lost in round {rounds} (seed {seed})"
            assert answer.ok and answer.result == {"n": cid}, answer
            entry = journal.get(cid)
            assert entry is not None and entry.state == S.COMPLETED
    assert len(reported) == len(set(reported))
    print(f"{rounds} kills, {len(reported)} answers reported, {recovered} entries interrupted")
    assert rounds >= MIN_ROUNDS and len(reported) >= MIN_REPORTED and recovered >= MIN_RECOVERED
