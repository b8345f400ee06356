#!/usr/bin/env python3
"""Run the chaos harness several times in a row, outside pytest, to hunt for rare failures.

    .venv/bin/python scripts/chaos.py --runs 10            # 10 short runs, random seeds
    .venv/bin/python scripts/chaos.py --seed 42 --ops 200  # replay one run

Prints one line per run (seed, kills, timings, result) and the full report of each failure;
the data dir (logs, database, fabric) of a failed run is kept and named in its report.
Exits 1 if any run failed. Output as JSON lines with --json.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.chaos.harness import ChaosConfig, run_chaos  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1, help="How many runs (default 1).")
    parser.add_argument("--ops", type=int, default=40, help="Operations per run (default 40).")
    parser.add_argument("--seed", type=int, help="Seed of the first run (then seed+1, ...).")
    parser.add_argument("--json", action="store_true", help="One JSON object per run.")
    parser.add_argument("--keep", action="store_true", help="Keep the data dirs of passing runs.")
    parser.add_argument("--migrate", action="store_true", help="Also migrate VMs.")
    parser.add_argument("--latency", type=float, default=0.05, help="Sim latency (s).")
    args = parser.parse_args()

    first = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 2**31)
    failed = 0
    for seed in range(first, first + args.runs):
        root = Path(tempfile.mkdtemp(prefix=f"bollard-chaos-{seed}-"))
        replay = (
            f"{sys.executable} {Path(__file__).name} --seed {seed} --ops {args.ops}"
            f" --latency {args.latency:g}" + (" --migrate" if args.migrate else "")
        )
        config = ChaosConfig(
            seed=seed,
            ops=args.ops,
            names=6 if args.ops <= 60 else 8,
            sim_latency=args.latency,
            migrate=args.migrate,
            replay=replay,
        )
        if not args.json:
            print(f"chaos: seed={seed} ops={args.ops} in {root}", flush=True)
        report = run_chaos(config, root, say=lambda line: None)
        if args.json:
            print(json.dumps({
                "seed": seed, "ops": args.ops, "ok": report.ok, "kills": report.kills,
                "timings": {k: round(v, 2) for k, v in report.timings.items()},
                "workload": report.workload, "data_dir": str(root),
                "failures": report.failures, "violations": [str(v) for v in report.violations],
            }), flush=True)  # fmt: skip
        else:
            print(report.headline() if report.ok else report.render(), flush=True)
        if report.ok and not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        failed += not report.ok
    if not args.json:
        print(f"{args.runs - failed}/{args.runs} runs passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
