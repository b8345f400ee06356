"""CLI start-up benchmark (issue 24): how long `bollard` takes for a simple read.

Each case is a fresh `bollard` process, timed from its start to its exit (wall clock), with
its CPU time (user + system) beside it. The cases:

- ``help``: `bollard --help`; ``vm_list_help``: `bollard vm list --help`;
- ``vm_list``, ``node_list``, ``status``: real reads against a cluster this benchmark starts
  (`bollard up --nodes 1 --detach` on a free port in a temporary directory, with one VM
  created), stopped with `bollard down` at the end (``--no-cluster``: skipped);
- ``import``: `python -c "import bollard.cli.main"` alone;
- the floor under them, the libraries a read cannot do without: ``python`` (the interpreter
  alone), ``typer_rich`` (Typer and the Rich modules the CLI prints with), ``typer_pydantic``
  (Typer with the pydantic machinery it converts every option value with since 0.29, which
  a subcommand loads even for `--help`), ``httpx`` (with httpcore, which it imports when the
  first client is made) and ``libraries`` (all of them).

A round runs every case once, in turn, so that other work on the machine spreads over all of
them; ``--runs`` rounds (default 20, ``--quick`` 5) follow one warm-up round that is not
counted. The children write their bytecode to a cache of the run's own (and so read it, as
an installed Bollard reads its own) whatever PYTHONDONTWRITEBYTECODE says here. Each command
is `python -c` with the console script's code (``from bollard.cli.main import main``), so
that ``--src DIR`` can measure another source tree (e.g. ``git archive`` of an older commit,
its ``src`` directory) with the same interpreter and libraries. ``importtime`` lists what
``import bollard.cli.main`` spends most on, from one run under ``python -X importtime``
(which adds its own overhead). ``--instructions`` also counts the instructions of one run of
each case under valgrind: unlike the times, the same on a busy machine as on an idle one.

The target: each simple read (``help``, ``vm_list_help``, ``vm_list``, ``node_list``,
``status``) under 150 ms, judged on its best run (``min``: other work on the machine only adds
time; the load average is in the report). A missed target is reported, not an error.

    python bench/cli_startup.py [--runs N] [--quick] [--no-cluster] [--instructions]
                                [--src DIR] [--output FILE] [--keep]
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchlib import (
    RESULTS_DIR,
    BenchError,
    base_parser,
    child_env,
    free_port,
    make_log,
    report_head,
    run_main,
    scratch_dir,
    stats,
    write_report,
)

DEFAULT_OUTPUT = RESULTS_DIR / "cli_startup.json"
TARGET_MS = 150.0
RUN_TIMEOUT = 60.0  # one timed command
VALGRIND_TIMEOUT = 600.0  # one command under valgrind (some 30 times slower)
UP_TIMEOUT = 120.0  # `bollard up --detach` (it waits for its node to connect)
LAUNCH = "import sys; sys.argv[0] = 'bollard'; from bollard.cli.main import main; sys.exit(main())"

# name -> python arguments; the reads need the cluster.
_RICH = "rich.console, rich.table, rich.text"
FLOOR = {
    "python": ["-c", "pass"],
    "typer_rich": ["-c", f"import typer, {_RICH}"],
    "typer_pydantic": ["-c", "import typer, typer._adapters"],
    "httpx": ["-c", "import httpx, httpcore"],
    "libraries": ["-c", f"import typer, typer._adapters, {_RICH}, httpx, httpcore"],
}
BOLLARD = {
    "import": ["-c", "import bollard.cli.main"],
    "help": ["-c", LAUNCH, "--help"],
    "vm_list_help": ["-c", LAUNCH, "vm", "list", "--help"],
}
READS = {
    "vm_list": ["-c", LAUNCH, "vm", "list"],
    "node_list": ["-c", LAUNCH, "node", "list"],
    "status": ["-c", LAUNCH, "status"],
}
SIMPLE_READS = ("help", "vm_list_help", "vm_list", "node_list", "status")

log = make_log("cli_startup")


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Run ``argv`` to its end: (wall seconds, CPU seconds of the child, user + system). One
    child at a time, so the growth of this process's children's usage is that child's. A
    non-zero exit is a ``BenchError`` with its stderr."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    try:
        done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, timeout=RUN_TIMEOUT)  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{argv[1:]} took over {RUN_TIMEOUT:g}s") from exc
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        what = " ".join(argv[3:]) if argv[2] == LAUNCH else argv[2]
        raise BenchError(f"`{what}` exited {done.returncode}: {done.stderr.decode().strip()}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def run_cases(cases: dict[str, list[str]], env: dict[str, str], runs: int) -> dict[str, Any]:
    """Every case once per round, ``runs`` rounds after one warm-up round."""
    walls: dict[str, list[float]] = {name: [] for name in cases}
    cpus: dict[str, list[float]] = {name: [] for name in cases}
    for round_no in range(runs + 1):
        for name, args in cases.items():
            wall, cpu = timed([sys.executable, *args], env)
            if round_no:  # round 0 warms the bytecode cache and the page cache
                walls[name].append(wall)
                cpus[name].append(cpu)
    return {
        name: {
            "wall_ms": stats(walls[name], scale=1000, digits=1),
            "cpu_ms": stats(cpus[name], scale=1000, digits=1),
        }
        for name in cases
    }


def import_profile(env: dict[str, str], top: int = 12) -> list[dict[str, Any]]:
    """What ``import bollard.cli.main`` imports first itself, the largest first (cumulative
    milliseconds under ``-X importtime``)."""
    argv = [sys.executable, "-X", "importtime", "-c", "import bollard.cli.main"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    if done.returncode != 0:
        raise BenchError(f"import bollard.cli.main failed: {done.stderr.strip()[-500:]}")
    found: list[tuple[str, int]] = []
    for line in done.stderr.splitlines():
        fields = line.removeprefix("import time:").split("|")
        if len(fields) != 3 or not fields[1].strip().isdigit():
            continue  # (the header)
        cumulative, name = int(fields[1]), fields[2][1:]  # "  " per level before the name
        level = (len(name) - len(name.lstrip(" "))) // 2
        if name.strip() == "bollard.cli.main":
            break
        if level == 1:  # imported by bollard.cli.main itself (it is printed after them)
            found.append((name.strip(), cumulative))
        elif level == 0:  # an earlier top-level import (bollard, bollard.cli)
            found = []
    found.sort(key=lambda item: -item[1])
    return [{"module": name, "ms": round(us / 1000, 1)} for name, us in found[:top]]


class Cluster:
    """`bollard up --nodes 1 --detach` in ``root``, with one VM; `bollard down` to stop."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.data_dir, self.env = root / "data", env

    def cli(self, *args: str, timeout: float = RUN_TIMEOUT) -> None:
        argv = [sys.executable, "-c", LAUNCH, *args]
        try:
            done = subprocess.run(argv, env=self.env, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise BenchError(f"`bollard {' '.join(args)}` took over {timeout:g}s") from exc
        if done.returncode != 0:
            raise BenchError(
                f"`bollard {' '.join(args)}` exited {done.returncode}: "
                f"{done.stderr.decode().strip()[-500:]}"
            )

    def start(self) -> None:
        port = str(free_port())
        log(f"bollard up --nodes 1 --detach on port {port}")
        self.cli("up", "--nodes", "1", "--detach", "--data-dir", str(self.data_dir),
                 "--port", port, timeout=UP_TIMEOUT)  # fmt: skip
        self.cli("vm", "create", "bench1", "--vcpus", "1", "--memory", "256", "--start", "--wait")

    def stop(self) -> None:
        try:
            self.cli("down", "--data-dir", str(self.data_dir))
        except BenchError as exc:
            log(f"bollard down failed: {exc}")


def parse_args(argv: list[str] | None) -> Any:
    parser = base_parser(__doc__, DEFAULT_OUTPUT)
    parser.add_argument("--runs", type=int, default=None, help="rounds (default 20)")
    parser.add_argument("--quick", action="store_true", help="5 rounds")
    parser.add_argument("--no-cluster", action="store_true", help="skip the reads")
    parser.add_argument(
        "--instructions", action="store_true", help="also count instructions (valgrind)"
    )
    parser.add_argument(
        "--src", type=Path, default=None, help="measure the bollard source tree in DIR (a src)"
    )
    args = parser.parse_args(argv)
    if args.runs is None:
        args.runs = 5 if args.quick else 20
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def measure(args: Any, root: Path, env: dict[str, str]) -> dict[str, Any]:
    cases = {**FLOOR, **BOLLARD}
    cluster = None if args.no_cluster else Cluster(root, env)
    try:
        if cluster is not None:
            cluster.start()
            cases.update(READS)
        log(f"{args.runs} rounds of {len(cases)} commands")
        results = run_cases(cases, env, args.runs)
        if args.instructions:
            log("counting instructions under valgrind (one run of each command)")
            results["instructions"] = count_instructions(cases, env)
    finally:
        if cluster is not None:
            cluster.stop()
    results["importtime"] = import_profile(env)
    return results


def count_instructions(cases: dict[str, list[str]], env: dict[str, str]) -> dict[str, Any]:
    """Millions of instructions each case executes: one run under valgrind (cachegrind
    without its cache simulation). Unlike the times, the same on a busy machine as on an
    idle one: for comparing two versions while other work runs."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        return {"skipped": "valgrind is not installed"}
    counts: dict[str, float] = {}
    for name, args in cases.items():
        argv = [valgrind, "--tool=cachegrind", "--cache-sim=no",
                "--cachegrind-out-file=/dev/null", sys.executable, *args]  # fmt: skip
        try:
            done = subprocess.run(argv, env=env, capture_output=True, text=True,
                                  timeout=VALGRIND_TIMEOUT)  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            raise BenchError(f"{name} under valgrind took over {VALGRIND_TIMEOUT:g}s") from exc
        found = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
        if done.returncode != 0 or found is None:
            raise BenchError(f"{name} under valgrind: exit {done.returncode}, no count")
        counts[name] = round(int(found.group(1).replace(",", "")) / 1e6, 1)
    return {"millions": counts}


def verdict(results: dict[str, Any]) -> dict[str, Any]:
    best = {name: results[name]["wall_ms"]["min"] for name in SIMPLE_READS if name in results}
    return {
        "target_ms": TARGET_MS,
        "judged_on": "each simple read's best wall time (min)",
        "best_ms": best,
        "met": bool(best) and all(ms < TARGET_MS for ms in best.values()),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.time()
    load_before = os.getloadavg()
    failed = False
    with scratch_dir("bollard-bench-cli-", args.keep, log) as root:
        env = child_env()
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        # The CLI's context file goes to the temporary directory, never to ~/.config.
        env.update(BOLLARD_CONFIG_DIR=str(root / "config"), PYTHONPYCACHEPREFIX=str(root / "pyc"))
        if args.src is not None:
            env["PYTHONPATH"] = str(args.src.resolve())
        try:
            results = measure(args, root, env)
        except (BenchError, OSError) as exc:
            log(f"failed: {exc}")
            results, failed = {"error": f"{type(exc).__name__}: {exc}"}, True
    report = {
        **report_head(
            "cli_startup",
            "wall and CPU time of `bollard` commands, each a fresh process: help, and reads "
            "against a 1-node cluster; and the libraries' own import time beneath them",
            started,
        ),
        "parameters": {
            "runs": args.runs,
            "quick": args.quick,
            "cluster": not args.no_cluster,
            "instructions": args.instructions,
            "src": str(args.src) if args.src is not None else None,
        },
        "load_average": {
            "before": [round(x, 2) for x in load_before],
            "after": [round(x, 2) for x in os.getloadavg()],
        },
        "results": results,
        "targets": verdict(results) if not failed else None,
    }
    write_report(report, args.output, log)
    return 1 if failed else 0


if __name__ == "__main__":
    run_main(main, log)
