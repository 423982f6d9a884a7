"""One writer per checkpoint directory, in-process (issue 16, section 2).

The lock between real processes, and a lock dropped with a SIGKILL-ed holder, are in tests/test_faults.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dltricks.checkpoint import Checkpoint, CheckpointError, _tmp_pid
from dltricks.checkpoint_lock import DirectoryLock, holder, process_alive
from dltricks.train import Callback, fit

DATA = [(torch.randn(4, 2), torch.tensor([0, 1, 0, 1]))] * 3


class Crash(Exception):
    pass


class NestedRun(Callback):
    """At step 1, start a second fit on the same directory and keep what it raised."""

    def __init__(self, directory: Path) -> None:
        self.directory, self.error = directory, None

    def on_step_end(self, state) -> None:
        if state.step == 1:
            net = torch.nn.Linear(2, 2)
            try:
                fit(net, DATA, torch.optim.SGD(net.parameters(), lr=0.1), epochs=1, progress=False,
                    callbacks=[Checkpoint(self.directory)])  # fmt: skip
            except CheckpointError as err:
                self.error = err


def _fit(directory: Path, callbacks=()) -> None:
    net = torch.nn.Linear(2, 2)
    fit(net, DATA, torch.optim.SGD(net.parameters(), lr=0.1), epochs=1, progress=False,
        callbacks=[*callbacks, Checkpoint(directory)])  # fmt: skip


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    nested = NestedRun(tmp_path)
    _fit(tmp_path, [nested])
    assert isinstance(nested.error, CheckpointError)
    assert f"{tmp_path} is in use by another run (process {os.getpid()} on " in str(nested.error)
    _fit(tmp_path)  # released when fit returned


def test_the_lock_is_released_when_fit_raises(tmp_path):
    class CrashAtOne(Callback):
        def on_step_end(self, state) -> None:
            raise Crash

    with pytest.raises(Crash):
        _fit(tmp_path, [CrashAtOne()])
    assert not (tmp_path / ".lock.owner").exists()
    _fit(tmp_path)


def test_directory_lock_acquire_release_and_holder(tmp_path):
    a, b = DirectoryLock(tmp_path / "d"), DirectoryLock(tmp_path / "d")
    assert holder(tmp_path / "d").startswith("holder unknown")
    a.acquire()
    a.acquire()  # a holder may ask again
    assert a.held and holder(tmp_path / "d").startswith(f"process {os.getpid()} on ")
    with pytest.raises(CheckpointError, match=r"is in use by another run \(process \d+ on .*, since "):
        b.acquire()
    a.release()
    a.release()  # a no-op when not held
    b.acquire()
    assert b.held and not a.held
    b.release()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_only_temporary_files_of_dead_processes_are_cleaned(tmp_path):
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = _dead_pid()
        assert process_alive(live.pid) and not process_alive(dead) and not process_alive(-1)
        tmp_path.mkdir(exist_ok=True)
        mine = tmp_path / f".ckpt-000000003.pt.{live.pid}.tmp"
        stale = tmp_path / f".ckpt-000000003.pt.{dead}.tmp"
        ownerless = tmp_path / ".ckpt-000000004.pt.tmp"
        for f in (mine, stale, ownerless):
            f.write_bytes(b"half a checkpoint")
        _fit(tmp_path)
        assert mine.exists()  # another live process may still be writing it
        assert not stale.exists() and not ownerless.exists()
    finally:
        live.kill()
        live.wait()


@pytest.mark.parametrize(
    ("name", "pid"),
    [(".ckpt-000000003.pt.123.tmp", 123), (".ckpt-000000003.pt.tmp", -1), (".ckpt-1.pt.x.tmp", -1)],
)
def test_tmp_pid_reads_the_writer_from_the_name(name, pid):
    assert _tmp_pid(Path(name)) == pid
