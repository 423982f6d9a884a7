"""Test helper for tests/test_torchrun.py: ``dltricks.examples.ddp`` as a torchrun worker, watched.

Runs the example's ``main`` with its command line, and at the end prints one JSON line
``{"report": rank, "writes": [...], "examples": {epoch: n}}``: every path under ``--out`` this process opened
for writing, created, renamed or removed, seen through a Python audit hook (PEP 578), so the test can tell
which rank wrote what; and how many training examples its steps used in each epoch.

With ``$PAUSE_AT="RANK:STEP"`` and ``$PAUSE_MARKER=path``, that rank stops after that training step, writes
its process id to the marker and waits to be killed (the test sends SIGKILL): a worker lost mid-epoch, at a
step the test knows. A relaunch finds the marker and does not pause.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from dltricks.callbacks import Callback, TrainState
from dltricks.examples.ddp import main

OUT = Path(sys.argv[sys.argv.index("--out") + 1]).resolve() if "--out" in sys.argv else Path("/nonexistent")
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
writes: set[str] = set()


def _under_out(path: object) -> str | None:
    if isinstance(path, int) or path is None:
        return None
    try:
        p = Path(os.fsdecode(path)).resolve()  # type: ignore[arg-type]
    except (TypeError, ValueError, OSError):
        return None
    return str(p.relative_to(OUT)) if p.is_relative_to(OUT) else None


def audit(event: str, args: tuple) -> None:
    if event == "open":
        path, mode, flags = args
        writing = any(c in mode for c in "wax+") if isinstance(mode, str) else bool(flags & WRITE_FLAGS)
        if writing and (rel := _under_out(path)) is not None:
            writes.add(rel)
    elif event in ("os.rename", "os.replace", "os.remove", "os.mkdir", "os.link", "os.symlink"):
        for path in args[:2]:
            if (rel := _under_out(path)) is not None:
                writes.add(rel)


class PauseAt(Callback):
    """Wait to be killed after step ``step`` on rank ``rank`` (stateless)."""

    def __init__(self, rank: int, step: int, marker: Path) -> None:
        self.rank, self.step, self.marker = rank, step, marker

    def on_step_end(self, state: TrainState) -> None:
        if int(os.environ["RANK"]) == self.rank and state.step == self.step and not self.marker.exists():
            self.marker.write_text(str(os.getpid()))
            while True:  # the test kills this process; a bound, in case it never does
                time.sleep(0.05)
                if time.monotonic() > START + 300:
                    raise SystemExit("PauseAt: nobody killed this worker in 300 s")


class CountExamples(Callback):
    """How many training examples this rank's steps used in each epoch (its shard: half of them of two)."""

    def __init__(self) -> None:
        self.per_epoch: dict[int, int] = {}

    def on_step_end(self, state: TrainState) -> None:
        self.per_epoch[state.epoch + 1] = state.loss_count


START = time.monotonic()
if __name__ == "__main__":
    sys.addaudithook(audit)
    counter = CountExamples()
    callbacks: list[Callback] = [counter]
    if os.environ.get("PAUSE_AT"):
        rank, step = (int(v) for v in os.environ["PAUSE_AT"].split(":"))
        callbacks.append(PauseAt(rank, step, Path(os.environ["PAUSE_MARKER"])))
    result = main(sys.argv[1:], callbacks=callbacks)
    report = {"report": result["rank"], "writes": sorted(writes), "examples": counter.per_epoch}
    print(json.dumps(report), flush=True)
