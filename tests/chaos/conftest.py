"""Chaos fixtures: the run's seed (BOLLARD_CHAOS_SEED, else random; always printed), the
`chaos` marker (long runs: `make chaos`, skipped unless `-m` selects them), and a summary of
every chaos run at the end of the session."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Callable

import pytest

SEED_ENV = "BOLLARD_CHAOS_SEED"
RUNS = pytest.StashKey[list[str]]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "chaos: long chaos runs (make chaos; -m chaos)")
    config.stash[RUNS] = []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Long chaos runs only run when a -m expression mentions them (`-m chaos`)."""
    if "chaos" in (config.getoption("markexpr", "") or ""):
        return
    skip = pytest.mark.skip(reason="long chaos run: select it with -m chaos (make chaos)")
    for item in items:
        if item.get_closest_marker("chaos") is not None:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    runs = terminalreporter.config.stash.get(RUNS, [])
    if runs:
        terminalreporter.write_sep("-", "chaos runs")
        for line in runs:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def chaos_seed() -> int:
    raw = os.environ.get(SEED_ENV, "").strip()
    if raw:
        try:
            return int(raw)
        except ValueError:
            pytest.fail(f"{SEED_ENV}={raw!r} is not an integer")
    return random.SystemRandom().randrange(1, 2**31)


@pytest.fixture
def announce(request: pytest.FixtureRequest) -> Callable[..., None]:
    """Print a line on the terminal now (past output capture); with ``keep``, also in the
    session's closing summary."""
    plugins = request.config.pluginmanager
    reporter = plugins.get_plugin("terminalreporter")
    capture = plugins.get_plugin("capturemanager")

    def say(line: str, *, keep: bool = False) -> None:
        print(line)  # in the captured output shown with a failure
        if reporter is not None:
            with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
                reporter.ensure_newline()
                reporter.write_line(line)
        if keep:
            request.config.stash[RUNS].append(line)

    return say
