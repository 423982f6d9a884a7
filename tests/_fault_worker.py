"""Test helper for tests/test_faults.py: one small training run that checkpoints and can be killed.

A job is a JSON object: ``dir`` (checkpoint directory), ``out`` (where the finished run writes its final
weights and history), optionally ``kill`` (``"step:N"`` or ``"epoch:N"``: the run SIGKILLs itself at that
point, before the checkpoint of that point is written), ``env`` (extra environment variables, e.g. the
checkpoint module's test-only ``DLTRICKS_TEST_KILL_DURING_SAVE``) and ``report`` (print ``step N`` after
every step and slow down a little, so that a test can kill the run from outside) and ``hold`` (a file:
after each step the run waits while it exists, so that a test can act while the run holds its directory).

Every run, first or resumed, is the same call: ``fit(..., resume_from=dir)``.

Two ways to run jobs:

* ``python _fault_worker.py run '<job>'``: one job in a fresh interpreter;
* ``python _fault_worker.py serve``: a "zygote" that imports torch once and then, for each job read as a
  line on stdin, forks a fresh child process that runs it, waits for it, and answers a JSON line with its
  exit code or the signal that killed it. A child shares no memory with the killed run it resumes (each is
  forked from the zygote, which never trains), and forking saves the ~2 s of importing torch per process.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback

import torch

from dltricks.batches import TensorBatches
from dltricks.checkpoint import Checkpoint
from dltricks.early_stopping import EarlyStopping
from dltricks.models import mlp
from dltricks.repro import seed_everything
from dltricks.train import Callback, fit

EPOCHS, BATCH, EVERY_STEPS = 4, 12, 3  # 96 examples: 8 batches an epoch, 32 steps


def blobs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Three overlapping Gaussian blobs in 2-D: not separable, so the loss keeps moving."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    centers = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.2]])
    return centers[y] + 0.8 * torch.randn(n, 2, generator=g), y


class SchedulerStep(Callback):
    """Step an LR scheduler after every epoch (its state is saved by ``Checkpoint(scheduler=...)``)."""

    def __init__(self, scheduler: torch.optim.lr_scheduler.LRScheduler) -> None:
        self.scheduler = scheduler

    def on_epoch_end(self, state) -> None:
        self.scheduler.step()


class Killer(Callback):
    """SIGKILL this process at ``step:N`` (after the step) or ``epoch:N`` (after the epoch's record)."""

    def __init__(self, spec: str | None, report: bool, hold: str | None = None) -> None:
        self.where, _, n = (spec or "none:0").partition(":")
        self.n, self.report, self.hold = int(n), report, hold

    def on_step_end(self, state) -> None:
        if self.report:
            print(f"step {state.step}", flush=True)
            time.sleep(0.05)  # give an outside killer time to land mid-run
        while self.hold and os.path.exists(self.hold):
            time.sleep(0.02)
        if self.where == "step" and state.step == self.n:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_epoch_end(self, state) -> None:
        if self.where == "epoch" and state.epoch == self.n:
            os.kill(os.getpid(), signal.SIGKILL)


def run(job: dict) -> None:
    """Train (or resume) the run of ``job`` to the end and write its final weights and history."""
    os.environ.update(job.get("env", {}))
    torch.set_num_threads(1)
    seed_everything(job.get("seed", 0))
    x, y = blobs(96, 1)
    xv, yv = blobs(48, 2)
    model = mlp(2, (32,), 3, dropout=0.3)  # dropout: the random state must be restored exactly
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    callbacks = [
        SchedulerStep(scheduler),
        EarlyStopping("val_loss", patience=EPOCHS),
        Killer(job.get("kill"), job.get("report", False), job.get("hold")),
        Checkpoint(job["dir"], every_steps=EVERY_STEPS, every_epochs=1, keep=2, scheduler=scheduler),
    ]
    history = fit(
        model,
        TensorBatches(x, y, BATCH, seed=7),
        optimizer,
        epochs=EPOCHS,
        val=TensorBatches(xv, yv, 48, shuffle=False),
        callbacks=callbacks,
        progress=False,
        resume_from=job["dir"],
    )
    records = [{k: v for k, v in r.items() if k != "seconds"} for r in history.epochs]
    torch.save({"params": model.state_dict(), "history": records}, job["out"])


def serve() -> None:
    """Fork a child per job line on stdin; answer each with ``{"code": ..., "signal": ...}``."""
    torch.set_num_threads(1)  # before any fork: children never start a thread pool they cannot own
    torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])  # imports torch._dynamo (~3 s) once, here
    for line in sys.stdin:
        job = json.loads(line)
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                run(job)
            except BaseException:
                traceback.print_exc()
                code = 1
            os._exit(code)  # no atexit handlers, no flushing of buffers inherited from the zygote
        _, status = os.waitpid(pid, 0)
        killed = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
        print(json.dumps({"code": code, "signal": killed}), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve()
    else:
        run(json.loads(sys.argv[2]))
