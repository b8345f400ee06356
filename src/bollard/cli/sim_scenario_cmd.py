"""`bollard sim scenario run|check FILE`: play an HA scenario (a cluster, a fault timeline,
the expected end state and must-never checks) on a local sim cluster of its own.

The file format is docs/scenarios.md; tests/scenarios/ holds the suite `make test` runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from bollard.cli.output import OUTPUT_OPTION, Output, console, fail, print_json

if TYPE_CHECKING:
    from bollard.cli.scenario_timeline import Entry
    from bollard.sim.scenario.model import Scenario

scenario_app = typer.Typer(
    help="Play HA scenarios (cluster, fault timeline, expected end state, must-never checks) "
    "on a local sim cluster of their own.",
    no_args_is_help=True,
)

FILE_ARGUMENT = typer.Argument(..., metavar="FILE", help="The scenario file (YAML).")
EXIT_MISS = 1  # the run ended with a miss or a must-never violation
EXIT_INVALID = 2  # the file was refused: nothing started


@scenario_app.callback()
def _scenario() -> None:
    """Play HA scenarios on a local sim cluster of their own (see docs/scenarios.md)."""


def _load(file: Path) -> Scenario:
    from bollard.sim.scenario.parse import ScenarioError, load_scenario

    try:
        return load_scenario(file)
    except ScenarioError as exc:
        fail(str(exc), code=EXIT_INVALID)


@scenario_app.command("check")
def check(file: Path = FILE_ARGUMENT, output: Output = OUTPUT_OPTION) -> None:
    """Check a scenario file without running it: its shape, values, settings and names.

    A file that is refused is named with its line and what was expected there (exit 2).
    With -o json: {"file", "scenario", "nodes", "vms", "steps"}.
    """
    scenario = _load(file)
    summary = {
        "file": str(file),
        "scenario": scenario.name,
        "nodes": len(scenario.cluster.nodes),
        "vms": len(scenario.cluster.vms),
        "steps": len(scenario.timeline),
    }
    if output == Output.json:
        print_json(summary)
        return
    console.print(
        f"{file}: scenario {scenario.name!r} is valid ({summary['nodes']} nodes, "
        f"{summary['vms']} VMs, {summary['steps']} timeline steps)",
        highlight=False,
        soft_wrap=True,
        markup=False,
    )


@scenario_app.command("run")
def run(
    file: Path = FILE_ARGUMENT,
    data_dir: Path | None = typer.Option(
        None,
        "--data-dir",
        metavar="DIR",
        help="Where the scenario's cluster keeps its database, logs and sim fabric; a new or "
        "empty directory, kept afterwards (default: a new temporary directory, removed after "
        "a passing run).",
    ),
    keep: bool = typer.Option(
        False, "--keep", help="Keep the data dir after a passing run too (a failing run keeps it)."
    ),
    output: Output = OUTPUT_OPTION,
) -> None:
    """Run a scenario on a local sim cluster of its own and check it.

    Starts a server and one sim agent per node of the scenario (own data dir, free port:
    several scenarios can run at once), sets up its settings, groups, VMs and rules, then
    plays the timeline while watching the must-nevers on the sim fabric (a VM on two hosts,
    a disk open on two hosts, a recovery before its node's fence, a VM running that must stay
    stopped or moved that must stay, two VMs of a strict apart rule on one node), and waits
    for the expected end state. Prints the timeline as it happens: set-up, faults applied,
    the server's events, checks.

    Exit 0 when everything held, 1 on any miss or violation, 2 when the file is refused.
    With -o json: one object at the end, {"scenario", "file", "passed", "seconds",
    "setup_seconds", "misses", "violations", "error", "data_dir", "fabric_reads",
    "timeline": [{"t", "kind", "text"}], "events": [...]}.
    """
    from bollard.cli.scenario_run import run_scenario

    scenario = _load(file)
    if data_dir is not None and data_dir.exists() and any(data_dir.iterdir()):
        fail(f"--data-dir {data_dir} is not empty; give a new or empty directory")
    text = output != Output.json
    if text:
        console.print(
            f"scenario {scenario.name!r} ({file})"
            + (f": {scenario.description.strip()}" if scenario.description else ""),
            highlight=False,
            soft_wrap=True,
            markup=False,
        )

    def echo(entry: Entry) -> None:
        console.print(entry.line(), highlight=False, soft_wrap=True, markup=False)

    result, timeline = run_scenario(
        scenario, data_dir=data_dir, keep=keep, echo=echo if text else None
    )
    if not text:
        print_json(result.to_json(timeline))
    if not result.passed:
        raise typer.Exit(EXIT_MISS)
