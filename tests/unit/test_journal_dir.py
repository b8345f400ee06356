"""The durable journal's files: layout, corrupt and torn files, write failures."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from bollard.agent.journal import CommandJournal, JournalWriteFailed
from bollard.agent.journal_store import DirJournalStore, entry_file_name
from bollard.domain.commands import AgentCommandState
from bollard.domain.protocol import Answer, Command

S = AgentCommandState


def cmd(cid: str) -> Command:
    return Command(id=cid, command="start", vm_uuid="vm-1", epoch=1, timeout=5)  # type: ignore[arg-type]


def finished(j: CommandJournal, cid: str) -> None:
    j.record_received(cmd(cid))
    j.advance(cid, S.STARTED)
    j.advance(cid, S.PROCESSING)
    j.finish(cid, Answer(command_id=cid, ok=True, result={"n": cid}))


def test_one_file_per_entry_and_pruned_entries_go_to_the_finished_log(tmp_path: Path) -> None:
    root = tmp_path / "journal"
    j = CommandJournal.open(root)
    j.record_received(cmd("c1"))
    data = json.loads((root / "c1.json").read_text())
    assert (data["command_id"], data["state"]) == ("c1", "RECEIVED")
    finished(j, "c2")
    assert json.loads((root / "c2.json").read_text())["state"] == "COMPLETED"
    assert j.ack({"c2": S.COMPLETED}) == 1
    assert not (root / "c2.json").exists()
    [line] = (root / "finished.jsonl").read_text().splitlines()
    assert json.loads(line)["command_id"] == "c2"
    assert sorted(p.name for p in root.iterdir()) == ["c1.json", "finished.jsonl"]


def test_ids_that_are_not_file_names_are_hashed(tmp_path: Path) -> None:
    j = CommandJournal.open(tmp_path)
    for cid in ("../../etc/passwd", "a b", ".hidden", "x" * 300):
        j.record_received(cmd(cid))
        name = entry_file_name(cid)
        assert name.startswith("_h_") and "/" not in name
        assert (tmp_path / name).exists()
    again = CommandJournal.open(tmp_path)
    assert again.corrupt_entries == 0 and len(again) == 4
    assert again.get("../../etc/passwd") is not None


def test_corrupt_entries_are_quarantined_counted_and_do_not_stop_loading(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "journal"
    j = CommandJournal.open(root)
    finished(j, "good")
    good = (root / "good.json").read_text()
    (root / "torn.json").write_text(good[: len(good) // 2])
    (root / "empty.json").write_bytes(b"")
    (root / "garbage.json").write_bytes(b"\xff\xfe\x00 not json")
    (root / "schema.json").write_text(json.dumps({"command_id": "schema"}))
    (root / "renamed.json").write_text(good)  # holds "good", so it is not "renamed"
    (root / ".tmp-good.json.123.abcd").write_text("{")  # a write cut short
    with caplog.at_level(logging.WARNING, logger="bollard.agent"):
        again = CommandJournal.open(root)
    assert again.corrupt_entries == 5
    assert [e.command_id for e in again.entries()] == ["good"]
    quarantined = sorted(p.name.split(".json")[0] for p in (root / "quarantine").iterdir())
    assert quarantined == ["empty", "garbage", "renamed", "schema", "torn"]
    assert sorted(p.name for p in root.iterdir()) == ["good.json", "quarantine"]
    for name in ("torn.json", "empty.json", "garbage.json", "schema.json", "renamed.json"):
        assert name in caplog.text
    # Set aside once: the next start finds a clean journal.
    assert CommandJournal.open(root).corrupt_entries == 0


def test_torn_and_garbled_finished_records(tmp_path: Path) -> None:
    root = tmp_path / "journal"
    j = CommandJournal.open(root)
    for cid in ("a", "b"):
        finished(j, cid)
    j.ack({"a": S.COMPLETED, "b": S.COMPLETED})
    log = root / "finished.jsonl"
    lines = log.read_text().splitlines()
    log.write_text(lines[0] + "\nnot a record\n" + lines[1][:20])  # garbled, then torn tail
    again = CommandJournal.open(root)
    assert again.corrupt_entries == 1  # the garbled line; a torn tail is a cut-short append
    assert again.answer_for("a") is not None and "b" not in again
    assert len(list((root / "quarantine").iterdir())) == 1
    # Rewritten clean, so that the next append does not glue onto the torn line.
    assert log.read_text() == lines[0] + "\n"
    finished(again, "c")
    again.ack({"c": S.COMPLETED})
    third = CommandJournal.open(root)
    assert third.corrupt_entries == 0
    assert {"a", "c"} <= {cid for cid in ("a", "b", "c") if cid in third}


def test_a_failed_write_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = DirJournalStore(tmp_path)
    j = CommandJournal(store)
    j.record_received(cmd("c1"))

    def broken(entry: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store, "put", broken)
    with pytest.raises(JournalWriteFailed):
        j.advance("c1", S.STARTED)
    with pytest.raises(JournalWriteFailed):
        j.record_received(cmd("c2"))
    entry = j.get("c1")
    assert entry is not None and entry.state == S.RECEIVED
    assert "c2" not in j
    monkeypatch.undo()
    j.advance("c1", S.STARTED)  # works again once the disk does


def test_a_failed_prune_is_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = DirJournalStore(tmp_path)
    j = CommandJournal(store)
    finished(j, "c1")

    def broken(entries: object) -> None:
        raise OSError(5, "I/O error")

    monkeypatch.setattr(store, "retire", broken)
    assert j.ack({"c1": S.COMPLETED}) == 0
    assert len(j) == 1 and j.unacked() == []
    monkeypatch.undo()
    assert j.prune() == 1 and len(j) == 0 and "c1" in j
