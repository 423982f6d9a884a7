"""Faults a long training run meets: a SIGKILL at any step or during a checkpoint write, a damaged file,
a hostile file. Nothing may be lost silently: every killed run resumes to the same bits, every bad file is
named and skipped, no hostile file runs code.

The kill tests use ``tests/_fault_worker.py``: a small MLP with dropout, Adam, a step LR schedule and early
stopping, 4 epochs of 8 batches, checkpointing every 3 steps and every epoch (14 saves), keeping 2. Each
run is a separate process (forked from a zygote that imported torch once, see the worker's docstring),
killed with SIGKILL, then resumed in another process with the same ``fit(..., resume_from=dir)`` call.
Two runs started on one directory are real concurrent processes too: the second must be refused at once,
naming the first, which must end as if alone.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from dltricks.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from dltricks.checkpoint_file import HEADER_SIZE, MAGIC

needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="the kill tests fork and SIGKILL (POSIX)")

WORKER = Path(__file__).with_name("_fault_worker.py")
STEPS, EPOCHS, SAVES = 32, 4, 14
KILLS = (
    # After a step: before the first checkpoint (1, 2), at a checkpoint's step before it is written (3, 9,
    # 24), mid-epoch, at the first (9, 17) and the last batch of an epoch (8, 16, 24, 32).
    [f"step:{n}" for n in (1, 2, 3, 5, 8, 9, 13, 16, 17, 22, 24, 29, 31, 32)]
    + [f"epoch:{n}" for n in (1, 2, 4)]  # after an epoch's record, before its checkpoint
    + [f"save:{n}" for n in (1, 3, 4, 7, 11, 14)]  # halfway through writing the temporary file
    + [f"save:{n}:replace" for n in (2, 8, 13)]  # written and synced, not yet renamed
)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DLTRICKS_TEST_KILL_DURING_SAVE"}
    return env | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "DLTRICKS_PROGRESS": "0"}


class Zygote:
    """The worker in ``serve`` mode: ``run(job)`` forks a fresh process for the job and returns its fate."""

    def __init__(self, log: Path) -> None:
        self.log = log.open("w")
        cmd = [sys.executable, str(WORKER), "serve"]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True, env=_env()
        )
        self.log_path = log

    def run(self, expect: str = "done", **job) -> dict:
        """Run ``job``; ``expect`` is ``"done"`` (exit code 0) or ``"killed"`` (by SIGKILL)."""
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            pytest.fail(f"the worker died:\n{self.log_path.read_text()[-3000:]}")
        fate = json.loads(line)
        wanted = {"code": 0, "signal": None} if expect == "done" else {"code": None, "signal": signal.SIGKILL}
        if fate != wanted:
            pytest.fail(f"job {job} should have been {expect}: {fate}\n{self.log_path.read_text()[-3000:]}")
        return fate

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
        self.log.close()


@pytest.fixture(scope="module")
def zygote(tmp_path_factory):
    z = Zygote(tmp_path_factory.mktemp("worker") / "stderr.txt")
    yield z
    z.close()


@pytest.fixture(scope="module")
def reference(zygote, tmp_path_factory):
    """The uninterrupted run: final weights and history (without the wall-clock seconds)."""
    base = tmp_path_factory.mktemp("reference")
    zygote.run(dir=str(base / "ckpt"), out=str(base / "out.pt"))
    return torch.load(base / "out.pt", weights_only=True)


def assert_same_run(out: Path, reference: dict) -> None:
    result = torch.load(out, weights_only=True)
    assert result["history"] == reference["history"]
    assert result["params"].keys() == reference["params"].keys()
    for name, value in reference["params"].items():
        assert torch.equal(result["params"][name], value), f"{name} differs from the uninterrupted run"


def kill_job(kill: str) -> dict:
    if kill.startswith("save:"):
        return {"env": {"DLTRICKS_TEST_KILL_DURING_SAVE": kill.removeprefix("save:")}}
    return {"kill": kill}


@needs_fork
@pytest.mark.parametrize("kill", KILLS)
def test_a_killed_run_resumes_to_the_same_bits(kill, zygote, reference, tmp_path):
    ckpt, out = tmp_path / "ckpt", tmp_path / "out.pt"
    zygote.run("killed", dir=str(ckpt), out=str(out), **kill_job(kill))
    assert not out.exists()
    if kill.startswith("save:"):  # the torn or unrenamed temporary file is there, under no checkpoint name
        assert list(ckpt.glob(".ckpt-*.tmp"))
    assert len(list_checkpoints(ckpt)) <= 2  # keep=2
    zygote.run(dir=str(ckpt), out=str(out))
    assert_same_run(out, reference)
    assert not list(ckpt.glob(".ckpt-*.tmp"))  # the resumed run cleared the torn write


@needs_fork
def test_a_run_killed_four_times_still_ends_the_same(zygote, reference, tmp_path):
    ckpt, out = tmp_path / "ckpt", tmp_path / "out.pt"
    for kill in ("step:5", "step:13", "save:3", "epoch:3"):  # each resumed run is killed again, later
        zygote.run("killed", dir=str(ckpt), out=str(out), **kill_job(kill))
    zygote.run(dir=str(ckpt), out=str(out))
    assert_same_run(out, reference)


@needs_fork
def test_a_run_killed_from_outside_at_an_arbitrary_moment_resumes(zygote, reference, tmp_path):
    """A cold interpreter, SIGKILL-ed by this test while it runs (wherever it is: a step, a write)."""
    ckpt, out = tmp_path / "ckpt", tmp_path / "out.pt"
    job = json.dumps({"dir": str(ckpt), "out": str(out), "report": True})
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), "run", job], stdout=subprocess.PIPE, text=True, env=_env()
    )
    for line in proc.stdout:
        if line.strip() == "step 7":
            # Somewhere within the next step or save, not on a step boundary; the worker sleeps 50 ms a
            # step, so the 25 steps left give a slow machine over a second to deliver the signal in time.
            time.sleep(random.uniform(0.0, 0.06))
            proc.send_signal(signal.SIGKILL)
            break
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert list_checkpoints(ckpt) and not out.exists()
    zygote.run(dir=str(ckpt), out=str(out))
    assert_same_run(out, reference)


# --- damaged files -------------------------------------------------------------------------------------


def _three_checkpoints(directory: Path) -> list[Path]:
    directory.mkdir()
    g = torch.Generator().manual_seed(0)
    return [
        save_checkpoint(directory / f"ckpt-{step:09d}.pt", {"w": torch.randn(64, generator=g), "step": step})
        for step in (10, 20, 30)
    ]


def test_every_truncation_and_bit_flip_is_detected(tmp_path):
    """No damaged file loads: 0 silent bad loads over 51 truncations and 300+ single-bit flips."""
    path = save_checkpoint(tmp_path / "ckpt-000000001.pt", {"w": torch.arange(50.0), "note": "x"})
    data = path.read_bytes()
    bad = tmp_path / "ckpt-000000002.pt"
    silent, damages = 0, 0
    cases = [data[:n] for n in range(0, len(data), len(data) // 50)]  # 51 lengths, header and archive
    # one flipped bit in every byte of the header, then in 200 bytes spread over the archive
    step = (len(data) - HEADER_SIZE) // 200
    flips = list(range(HEADER_SIZE)) + list(range(HEADER_SIZE, len(data), step))
    cases += [data[:i] + bytes([data[i] ^ (1 << i % 8)]) + data[i + 1 :] for i in flips]
    for damaged in cases:
        bad.write_bytes(damaged)
        damages += 1
        try:
            load_checkpoint(bad)
            silent += 1
        except CheckpointError as err:
            assert str(bad) in str(err)
    assert damages > 350 and silent == 0


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: d[: len(d) - 100], r"is truncated: its archive has \d+ bytes, the header says"),
        (lambda d: d[:60], r"is truncated: 60 bytes, shorter than the header"),
        (lambda d: b"", r"is truncated: the file is empty"),
        (lambda d: d[:-200] + bytes([d[-200] ^ 0x10]) + d[-199:], r"is damaged: checksum mismatch"),
        (lambda d: d + b"\0", r"is damaged \(trailing bytes\)"),
        (lambda d: b"PK\x03\x04" + d[4:], r"is not a dltricks checkpoint"),
    ],
    ids=["truncated", "truncated-header", "empty", "bit-flip", "trailing", "not-a-checkpoint"],
)
def test_damage_is_named_and_latest_falls_back_to_the_previous_good_file(damage, message, tmp_path):
    paths = _three_checkpoints(tmp_path / "ckpt")
    paths[-1].write_bytes(damage(paths[-1].read_bytes()))
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(paths[-1])
    with pytest.warns(RuntimeWarning, match=rf"skipping bad checkpoint .*{paths[-1].name}"):
        assert latest_checkpoint(tmp_path / "ckpt") == paths[1]
    assert load_checkpoint(paths[1])["step"] == 20


def test_latest_warns_about_every_bad_file_it_passes(tmp_path):
    paths = _three_checkpoints(tmp_path / "ckpt")
    for p in paths[1:]:
        p.write_bytes(p.read_bytes()[:-1])
    with pytest.warns(RuntimeWarning) as caught:
        assert latest_checkpoint(tmp_path / "ckpt") == paths[0]
    assert len(caught) == 2
    for bad, warning in zip(reversed(paths[1:]), caught):  # newest first
        assert f"skipping bad checkpoint {bad}: " in str(warning.message)
    for p in paths:
        p.write_bytes(b"")
    with pytest.warns(RuntimeWarning):
        assert latest_checkpoint(tmp_path / "ckpt") is None


# --- hostile files -------------------------------------------------------------------------------------


class Exploit:
    """Unpickling this runs ``touch <marker>``: what a malicious 'checkpoint' would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _with_valid_header(body: bytes) -> bytes:
    import hashlib

    return MAGIC + f"1\nsha256 {hashlib.sha256(body).hexdigest()}\nbytes {len(body):020d}\n".encode() + body


def _hostile_files(marker: Path) -> dict[str, bytes]:
    import io

    archive = io.BytesIO()
    torch.save({"model": {"w": torch.zeros(2)}, "extra": Exploit(marker)}, archive)
    raw = pickle.dumps({"model": Exploit(marker)})
    return {
        "torch archive, correct checksum": _with_valid_header(archive.getvalue()),
        "raw pickle, correct checksum": _with_valid_header(raw),
        "raw pickle, no header": raw,
        "torch archive, no header": archive.getvalue(),
    }


def test_the_hostile_payloads_are_live(tmp_path):
    """Control: unpickled without protection, the payload does run code (so the refusals below matter)."""
    marker = tmp_path / "pwned"
    pickle.loads(pickle.dumps(Exploit(marker)))
    assert marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's note on the raw pickles
@pytest.mark.parametrize("kind", list(_hostile_files(Path("/x"))))
def test_a_hostile_file_is_refused_and_runs_nothing(kind, tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "ckpt" / "ckpt-000000100.pt"
    path.parent.mkdir()
    path.write_bytes(_hostile_files(marker)[kind])
    pattern = "refused unsafe content" if "correct checksum" in kind else "is not a dltricks checkpoint"
    with pytest.raises(CheckpointError, match=pattern):
        load_checkpoint(path)
    with pytest.warns(RuntimeWarning, match="ckpt-000000100.pt"):
        assert latest_checkpoint(path.parent) is None
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["torch archive, correct checksum", "raw pickle, correct checksum"])
def test_a_hostile_file_is_refused_even_where_torch_is_told_to_load_unsafely(kind, tmp_path, monkeypatch):
    """TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 makes torch.load default to weights_only=False (to read old
    files); loading asks for weights_only=True explicitly, which the variable does not override."""
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "pwned"
    path = tmp_path / "ckpt-000000100.pt"
    path.write_bytes(_hostile_files(marker)[kind])
    # the reason is torch's line that names the refused global or opcode, not its advice to retry unsafely
    named = f"GLOBAL {os.system.__module__}.system" if "archive" in kind else "Unsupported operand"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Detected pickle protocol")  # torch's note on the raw pickle
        with pytest.raises(CheckpointError, match="refused unsafe content") as info:
            load_checkpoint(path)
    reason = str(info.value).split("(objects beyond tensors and primitives): ")[1]
    assert named in reason and "weights_only" not in reason
    assert not marker.exists()


def test_resume_skips_a_hostile_newest_file_and_runs_nothing(tmp_path):
    """A good checkpoint, then a hostile one under the next name: the resume uses the good one."""
    from dltricks.checkpoint import Checkpoint
    from dltricks.train import fit

    marker = tmp_path / "pwned"
    net = torch.nn.Linear(2, 2)
    data = [(torch.randn(4, 2), torch.tensor([0, 1, 0, 1]))]
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    fit(net, data, opt, epochs=1, callbacks=[Checkpoint(tmp_path / "c")], progress=False)
    (tmp_path / "c" / "ckpt-000000002.pt").write_bytes(
        _hostile_files(marker)["torch archive, correct checksum"]
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = fit(
            net, data, opt, epochs=2, callbacks=[Checkpoint(tmp_path / "c")], resume_from=tmp_path / "c"
        )
    assert any("ckpt-000000002.pt" in str(w.message) and "refused unsafe" in str(w.message) for w in caught)
    assert len(history) == 2 and not marker.exists()
    assert (tmp_path / "c" / "ckpt-000000002.pt").exists()  # the resumed run's own save at step 2
    assert (tmp_path / "c" / "ckpt-000000002.pt.corrupt").exists()  # the hostile file, set aside


# --- two runs, one directory ---------------------------------------------------------------------------


@needs_fork
def test_a_second_run_on_the_same_directory_fails_at_once_and_the_first_is_untouched(reference, tmp_path):
    """Two real processes on one directory: the second is refused, naming the first; the first ends as if
    alone (before the lock, the pair could end in a mixed result that exits 0, or the second's start-up
    deleted the first's in-flight temporary file)."""
    ckpt, hold = tmp_path / "ckpt", tmp_path / "hold"
    hold.touch()  # the first run waits after each step until the test removes this
    first = json.dumps(
        {"dir": str(ckpt), "out": str(tmp_path / "first.pt"), "report": True, "hold": str(hold)}
    )
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), "run", first], stdout=subprocess.PIPE, text=True, env=_env()
    )
    try:
        for line in proc.stdout:
            if line.strip() == "step 1":  # it holds the lock and waits after its first step
                break
        second = json.dumps({"dir": str(ckpt), "out": str(tmp_path / "second.pt")})
        start = time.monotonic()
        refused = subprocess.run(
            [sys.executable, str(WORKER), "run", second],
            capture_output=True,
            text=True,
            env=_env(),
            timeout=120,
        )
        assert refused.returncode != 0 and proc.poll() is None  # refused while the first still runs
        assert f"is in use by another run (process {proc.pid} on " in refused.stderr
        assert "CheckpointError" in refused.stderr and not (tmp_path / "second.pt").exists()
        assert time.monotonic() - start < 60  # at once: it did not wait for the lock
    finally:
        hold.unlink(missing_ok=True)  # let the first run go on (or end), whatever happened above
    proc.stdout.read()
    assert proc.wait(timeout=120) == 0
    assert_same_run(tmp_path / "first.pt", reference)
    assert not list(ckpt.glob(".ckpt-*.tmp"))


@needs_fork
def test_the_lock_of_a_killed_run_goes_with_it(zygote, reference, tmp_path):
    """SIGKILL leaves no stale lock: the operating system drops it with the process."""
    ckpt, out = tmp_path / "ckpt", tmp_path / "out.pt"
    zygote.run("killed", dir=str(ckpt), out=str(out), kill="step:10")
    assert (ckpt / ".lock.owner").exists()  # the killed holder could not clean up its note ...
    zygote.run(dir=str(ckpt), out=str(out))  # ... yet the next run takes the directory at once
    assert_same_run(out, reference)
