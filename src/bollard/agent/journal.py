"""Where the executor remembers commands, so that one delivered twice runs once.

``MemoryJournal`` keeps answers in memory only (lost with the process). A durable journal
(DESIGN.md section 5: RECEIVED → STARTED → PROCESSING → COMPLETED | FAILED, fsynced before
acting) implements the same ``CommandJournal`` protocol and slots into the executor.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Protocol

from bollard.domain.protocol import Answer, Command


class CommandJournal(Protocol):
    def answer_for(self, command_id: str) -> Answer | None:
        """The recorded answer of a finished command, if any."""
        ...

    def record_received(self, command: Command) -> None:
        """Called before the command is acted on."""
        ...

    def record_answer(self, command: Command, answer: Answer) -> None:
        """Called once the command finished, before its answer is sent."""
        ...


class MemoryJournal:
    """Answers of the last ``capacity`` finished commands, in memory."""

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._answers: OrderedDict[str, Answer] = OrderedDict()

    def answer_for(self, command_id: str) -> Answer | None:
        return self._answers.get(command_id)

    def record_received(self, command: Command) -> None:
        return None

    def record_answer(self, command: Command, answer: Answer) -> None:
        self._answers[command.id] = answer
        self._answers.move_to_end(command.id)
        while len(self._answers) > self.capacity:
            self._answers.popitem(last=False)
