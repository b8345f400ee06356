"""A stack sampler for a benchmark's subprocess: every thread's stack every 5 ms, in the
process itself, written out at each SIGUSR1 (a diagnosis aid; it costs CPU itself).

    python bench/stack_sampler.py OUTPUT -- ARGV...   # runs ``bollard ARGV`` under it
"""

from __future__ import annotations

import collections
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

# A stack ending here waits: the event loop (uvloop's, in C, under asyncio's runner; or
# the selector), an idle thread of a pool, the log queue's listener, a lock.
IDLE = {"runners.py:run", "selectors.py:select", "thread.py:_worker", "handlers.py:dequeue",
        "queue.py:get", "threading.py:wait", "threading.py:_wait_for_tstate_lock"}  # fmt: skip


def _where(frame: FrameType) -> str:
    code = frame.f_code
    parts = Path(code.co_filename).parts
    short = "/".join(parts[parts.index("bollard") :]) if "bollard" in parts else parts[-1]
    return f"{short}:{code.co_name}"


def sampled(output: str, argv: list[str]) -> None:
    """Run the bollard CLI with ``argv`` under a sampler of every thread's stack. At each
    SIGUSR1, write what was sampled since the previous one to ``output.N`` (N = 1, 2...):
    the functions by their own and inclusive share of the busy samples (stacks not waiting
    in select, a lock or a queue), and every stack to ``output.N.folded``."""
    import runpy

    folded: collections.Counter[str] = collections.Counter()
    dumps, sampler_id = 0, 0

    def sample() -> None:
        while True:
            time.sleep(0.005)  # the sampling interval
            into = folded
            for ident, frame in sys._current_frames().items():
                if ident == sampler_id:
                    continue
                stack: list[str] = []
                f: FrameType | None = frame
                while f is not None:
                    stack.append(_where(f))
                    f = f.f_back
                into[";".join(reversed(stack))] += 1

    def dump(signum: int, frame: FrameType | None) -> None:
        nonlocal folded, dumps
        taken, folded = folded, collections.Counter()
        dumps = n = dumps + 1
        busy = {k: v for k, v in taken.items() if k.rsplit(";", 1)[-1] not in IDLE}
        total = sum(busy.values()) or 1
        own: collections.Counter[str] = collections.Counter()
        inclusive: collections.Counter[str] = collections.Counter()
        for stack, count in busy.items():
            frames = stack.split(";")
            own[frames[-1]] += count
            for name in set(frames):
                inclusive[name] += count
        lines = [f"busy samples: {total} (of {sum(taken.values())})", "", "self%  function"]
        lines += [f"{100 * c / total:5.1f}  {k}" for k, c in own.most_common(40)]
        lines += ["", "incl%  function"]
        lines += [f"{100 * c / total:5.1f}  {k}" for k, c in inclusive.most_common(100)]
        Path(f"{output}.{n}").write_text("\n".join(lines) + "\n")
        Path(f"{output}.{n}.folded").write_text(
            "".join(f"{k} {c}\n" for k, c in taken.most_common())
        )

    signal.signal(signal.SIGUSR1, dump)
    thread = threading.Thread(target=sample, name="bench-sampler", daemon=True)
    thread.start()
    sampler_id = thread.ident or 0
    sys.argv = ["bollard", *argv]
    runpy.run_module("bollard", run_name="__main__")


if __name__ == "__main__":
    sampled(sys.argv[1], sys.argv[3:])
