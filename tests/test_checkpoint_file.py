"""The checkpoint file format on its own (dltricks.checkpoint_file): names, listing, argument errors, the
exact header, what a save leaves on disk, and the test-only kill hook in a real forked process.

Damage and hostile files are in ``tests/test_faults.py``; resuming a run in ``tests/test_checkpoint.py``."""

from __future__ import annotations

import errno
import hashlib
import io
import multiprocessing
import os
import pickle
import re
import signal
import warnings
import zipfile

import pytest
import torch

import dltricks.checkpoint_file as cf
from dltricks.checkpoint_file import (
    HEADER_SIZE,
    CheckpointError,
    checkpoint_name,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)


def _exact(message: str) -> str:
    return "^" + re.escape(message) + "$"


def _header(body: bytes) -> bytes:
    digest = hashlib.sha256(body).hexdigest()
    return f"dltricks checkpoint v1\nsha256 {digest}\nbytes {len(body):020d}\n".encode()


def test_names_sort_by_step_with_nine_digits_and_more_when_needed():
    assert checkpoint_name(0) == "ckpt-000000000.pt"
    assert checkpoint_name(1230) == "ckpt-000001230.pt"
    assert checkpoint_name(12345678901) == "ckpt-12345678901.pt"
    with pytest.raises(ValueError, match=_exact("`step` must be an integer >= 0. Received: step=-1")):
        checkpoint_name(-1)
    with pytest.raises(TypeError, match=_exact("`step` must be an integer >= 0. Received: step=1.0")):
        checkpoint_name(1.0)


def test_listing_keeps_only_checkpoint_names_sorted_by_step(tmp_path):
    assert list_checkpoints(tmp_path / "missing") == []
    (tmp_path / "a-file").write_text("")
    assert list_checkpoints(tmp_path / "a-file") == []  # not a directory
    for name in ["ckpt-000000020.pt", "ckpt-1000000000.pt", "ckpt-000000003.pt", "ckpt-00000001.pt",
                 "ckpt-999999999.pt", "ckpt-000000005.pt.corrupt", ".ckpt-000000007.pt.1.tmp",
                 "xckpt-000000009.pt"]:  # fmt: skip
        (tmp_path / name).write_text("")
    names = [p.name for p in list_checkpoints(str(tmp_path))]
    # by step, not by name: "ckpt-1000000000.pt" sorts before "ckpt-999999999.pt" as a string
    assert names == ["ckpt-000000003.pt", "ckpt-000000020.pt", "ckpt-999999999.pt", "ckpt-1000000000.pt"]
    with pytest.raises(
        TypeError, match=_exact("`directory` must be a directory path. Received: directory=3")
    ):
        list_checkpoints(3)


def test_the_header_is_exactly_the_documented_one(tmp_path):
    path = save_checkpoint(tmp_path / "ckpt-000000001.pt", {"w": torch.arange(3.0), "step": 1})
    data = path.read_bytes()
    body = data[HEADER_SIZE:]
    header = f"dltricks checkpoint v1\nsha256 {hashlib.sha256(body).hexdigest()}\nbytes {len(body):020d}\n"
    assert data[:HEADER_SIZE] == header.encode() and HEADER_SIZE == len(header)
    loaded = load_checkpoint(path)
    assert (
        set(loaded) == {"w", "step"} and torch.equal(loaded["w"], torch.arange(3.0)) and loaded["step"] == 1
    )


def test_a_save_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "ckpt-000000001.pt"
    assert save_checkpoint(path, {"a": 1}) == path
    assert save_checkpoint(str(path), {"a": 2}) == path
    assert load_checkpoint(path) == {"a": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda p: save_checkpoint(3, {}), TypeError, "`path` must be a file path. Received: path=3"),
        (lambda p: save_checkpoint(p, [1]), TypeError,
         "`payload` must be a dict of tensors and JSON-like primitives. Received: payload=[1]"),
        (lambda p: save_checkpoint(p, {"a": {(1, 2): 3}}), TypeError,
         "`payload['a'] keys` must be strings or integers. Received: payload['a'] keys=(1, 2)"),
        (lambda p: save_checkpoint(p, {"a": [1, {2}]}), TypeError,
         "`payload['a'][1]` must be a tensor, number, string, bool, None, or a list/tuple/dict of these. "
         "Received: payload['a'][1]={2}"),
        (lambda p: load_checkpoint(None), TypeError, "`path` must be a file path. Received: path=None"),
    ],
)  # fmt: skip
def test_argument_errors_have_the_right_type_and_the_whole_message(call, error, message, tmp_path):
    with pytest.raises(error, match=_exact(message)):
        call(tmp_path / "ckpt-000000001.pt")
    assert list(tmp_path.iterdir()) == []  # refused before anything was written


def test_load_names_the_fault_in_full(tmp_path):
    path = tmp_path / "ckpt-000000001.pt"
    with pytest.raises(FileNotFoundError):
        load_checkpoint(path)
    path.write_bytes(b"dltricks checkpoint v2\n" + b"x" * 200)
    header = (b"dltricks checkpoint v2\n" + b"x" * 200)[:HEADER_SIZE]
    with pytest.raises(
        CheckpointError, match=_exact(f"{path} has a damaged or unsupported header: {header!r}")
    ):
        load_checkpoint(path)
    path.write_bytes(b"dltricks chec")  # a prefix of the magic: truncated, not foreign
    with pytest.raises(
        CheckpointError, match=_exact(f"{path} is truncated: 13 bytes, shorter than the header")
    ):
        load_checkpoint(path)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:  # a zip file, but not torch's layout
        z.writestr("archive/other", "x")
    body = archive.getvalue()
    path.write_bytes(_header(body) + body)
    with pytest.raises(CheckpointError, match="^" + re.escape(f"{path} holds no readable torch archive: ")):
        load_checkpoint(path)
    save_checkpoint(path, {"a": 1})
    data = path.read_bytes()
    path.write_bytes(data + b"xy")
    n = len(data) - HEADER_SIZE
    expected = f"{path} is damaged (trailing bytes): its archive has {n + 2} bytes, the header says {n}"
    with pytest.raises(CheckpointError, match=_exact(expected)):
        load_checkpoint(path)


def test_an_archive_holding_something_other_than_a_dict_is_refused(tmp_path):
    path = tmp_path / "ckpt-000000001.pt"
    save_checkpoint(path, {"a": 1})
    buffer = io.BytesIO()
    torch.save([1, 2], buffer)
    body = buffer.getvalue()
    path.write_bytes(_header(body) + body)
    with pytest.raises(
        CheckpointError, match=_exact(f"{path} is not a dltricks checkpoint: it holds a list")
    ):
        load_checkpoint(path)


def test_latest_warns_at_the_callers_line_and_skips_to_a_good_file(tmp_path):
    good = save_checkpoint(tmp_path / "ckpt-000000001.pt", {"a": 1})
    bad = tmp_path / "ckpt-000000002.pt"
    bad.write_bytes(b"")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert latest_checkpoint(tmp_path) == good
    assert [w.category for w in caught] == [RuntimeWarning]
    if "MUTANT_UNDER_TEST" not in os.environ:  # under mutmut its trampolines add frames (tools/mutate.py)
        assert caught[0].filename == __file__  # stacklevel points at the code that asked
    assert str(caught[0].message) == f"skipping bad checkpoint {bad}: {bad} is truncated: the file is empty"
    assert bad.exists()  # latest_checkpoint only reads; a resume is what sets bad files aside
    with pytest.warns(RuntimeWarning, match=re.escape(f"; renamed to {bad.name}.corrupt")):
        found = cf._newest_good(tmp_path, quarantine=True)
    assert found is not None and found[0] == good and found[1] == {"a": 1}
    assert not bad.exists() and (tmp_path / f"{bad.name}.corrupt").exists()


def test_a_resume_that_must_not_fall_back_refuses_with_every_file_and_its_fault_word_for_word(tmp_path):
    # refuse=True is what fit's resume uses: a request to resume that no file can honour raises, naming
    # each file (newest first) and why, and leaves the files as they were.
    older, newer = tmp_path / "ckpt-000000001.pt", tmp_path / "ckpt-000000002.pt"
    older.write_bytes(b"")
    save_checkpoint(newer, {"a": 1})
    newer.write_bytes(newer.read_bytes()[:-3])
    size = newer.stat().st_size - HEADER_SIZE
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # refused, not warned about
        with pytest.raises(CheckpointError) as info:
            cf._newest_good(tmp_path, quarantine=True, refuse=True)
    assert str(info.value) == (
        f"cannot resume from {tmp_path}: none of its 2 checkpoint(s) can be loaded ("
        f"{newer} is truncated: its archive has {size} bytes, the header says {size + 3}; "
        f"{older} is truncated: the file is empty). Nothing was renamed or deleted. Repair or remove them to "
        "start afresh, or resume from a checkpoint file that verifies"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [older.name, newer.name]
    assert cf._newest_good(tmp_path / "empty", refuse=True) is None  # nothing to resume from: no refusal


def test_the_kill_hook_counts_saves_and_parses_its_spec(monkeypatch):
    monkeypatch.setattr(cf, "_saves", 0)
    monkeypatch.delenv("DLTRICKS_TEST_KILL_DURING_SAVE", raising=False)
    assert cf._test_kill_point() is None and cf._saves == 1
    monkeypatch.setenv("DLTRICKS_TEST_KILL_DURING_SAVE", "3")
    assert cf._test_kill_point() is None  # save 2
    assert cf._test_kill_point() == "write"  # save 3
    assert cf._test_kill_point() is None  # save 4
    monkeypatch.setenv("DLTRICKS_TEST_KILL_DURING_SAVE", "5:replace")
    assert cf._test_kill_point() == "replace"


def _save_in_child(path: str, spec: str) -> None:
    os.environ["DLTRICKS_TEST_KILL_DURING_SAVE"] = spec
    cf._saves = 0
    save_checkpoint(path, {"w": torch.arange(1000.0)})
    os._exit(0)  # not reached when the hook fires


@pytest.mark.skipif(os.name != "posix", reason="needs fork and SIGKILL")
@pytest.mark.parametrize("where", ["write", "replace"])
def test_a_process_killed_during_a_save_leaves_the_old_file_whole(where, tmp_path):
    """A real process, killed by the hook: the old checkpoint is untouched, the new bytes are only in the
    temporary file (half of them for ``write``, all of them before the rename for ``replace``)."""
    path = tmp_path / "ckpt-000000001.pt"
    save_checkpoint(path, {"w": torch.zeros(3)})
    spec = "1" if where == "write" else "1:replace"
    child = multiprocessing.get_context("fork").Process(target=_save_in_child, args=(str(path), spec))
    child.start()
    child.join(60)
    assert child.exitcode == -signal.SIGKILL
    assert torch.equal(load_checkpoint(path)["w"], torch.zeros(3))
    tmp = tmp_path / f".{path.name}.{child.pid}.tmp"
    assert tmp.exists()
    full = save_checkpoint(tmp_path / "ckpt-000000002.pt", {"w": torch.arange(1000.0)}).stat().st_size
    assert tmp.stat().st_size == (full // 2 if where == "write" else full)
    assert list_checkpoints(tmp_path) == [path, tmp_path / "ckpt-000000002.pt"]  # the temporary is not listed


def test_a_failed_write_removes_its_temporary_and_reraises(tmp_path, monkeypatch):
    path = tmp_path / "ckpt-000000001.pt"

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(cf.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="^disk full$"):
        save_checkpoint(path, {"a": 1})
    assert list(tmp_path.iterdir()) == []


def test_a_file_cut_at_the_end_of_its_header_or_just_before_names_the_right_fault(tmp_path):
    path = save_checkpoint(tmp_path / "ckpt-000000001.pt", {"a": 1})
    data = path.read_bytes()
    n = len(data) - HEADER_SIZE
    path.write_bytes(data[:HEADER_SIZE])  # the whole header, no archive
    expected = f"{path} is truncated: its archive has 0 bytes, the header says {n}"
    with pytest.raises(CheckpointError, match=_exact(expected)):
        load_checkpoint(path)
    path.write_bytes(data[: HEADER_SIZE - 1])
    expected = f"{path} is truncated: {HEADER_SIZE - 1} bytes, shorter than the header"
    with pytest.raises(CheckpointError, match=_exact(expected)):
        load_checkpoint(path)


REFUSED = "refused unsafe content (objects beyond tensors and primitives): "


@pytest.mark.parametrize(
    ("torch_message", "reason"),
    [
        # the first line that names the refused object (says GLOBAL or (U)nsupported), not torch's advice
        ("Weights only load failed. Re-run with weights_only=False.\n\nUnsupported global: GLOBAL a.b "
         "was not an allowed global by default.\nCheck the documentation", "Unsupported global: GLOBAL a.b "
         "was not an allowed global by default."),
        ("Weights only load failed.\nGLOBAL evil.run refused\nUnsupported operand 149",
         "GLOBAL evil.run refused"),
        ("Weights only load failed.\n\nUnsupported operand 149\n", "Unsupported operand 149"),
        ("Weights only load failed.\nno name given here", "UnpicklingError"),  # nothing names it: the type
        ("Unsupported global: GLOBAL " + "x" * 400, ("Unsupported global: GLOBAL " + "x" * 400)[:300]),
    ],
)  # fmt: skip
def test_a_refused_archive_is_reported_by_the_line_that_names_the_object(
    torch_message, reason, tmp_path, monkeypatch
):
    path = save_checkpoint(tmp_path / "ckpt-000000001.pt", {"a": 1})

    def refusing_load(*args, **kwargs):
        raise pickle.UnpicklingError(torch_message)

    monkeypatch.setattr(torch, "load", refusing_load)
    with pytest.raises(CheckpointError, match=_exact(f"{path}: {REFUSED}{reason}")):
        load_checkpoint(path)


def test_a_save_that_fails_before_its_temporary_exists_raises_that_error(tmp_path, monkeypatch):
    def full_disk_open(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cf, "open", full_disk_open, raising=False)  # found before the builtin open
    with pytest.raises(OSError) as info:
        save_checkpoint(tmp_path / "ckpt-000000001.pt", {"a": 1})
    assert info.value.errno == errno.ENOSPC  # not a FileNotFoundError from cleaning up a missing temporary
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.name != "posix", reason="POSIX file descriptors")
def test_a_save_syncs_the_file_then_its_directory_except_on_windows(tmp_path, monkeypatch):
    opened, synced = [], []
    real_open, real_fsync = os.open, os.fsync

    def spy_open(path, flags, *args, **kwargs):
        opened.append((str(path), flags))
        return real_open(path, flags, *args, **kwargs)

    def spy_fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd") else fd)
        real_fsync(fd)

    monkeypatch.setattr(cf.os, "open", spy_open)
    monkeypatch.setattr(cf.os, "fsync", spy_fsync)
    path = save_checkpoint(tmp_path / "ckpt-000000001.pt", {"a": 1})
    assert opened == [(str(tmp_path), os.O_RDONLY)]  # the directory, after the file (opened by open())
    assert len(synced) == 2
    if os.path.exists("/proc/self/fd"):
        assert synced == [str(tmp_path / f".{path.name}.{os.getpid()}.tmp"), str(tmp_path)]
    opened.clear()
    with monkeypatch.context() as m:
        m.setattr(cf.os, "name", "nt")  # Windows cannot open a directory: nothing is opened there
        cf._fsync_directory(tmp_path)
    assert opened == []


def test_the_kill_hook_flushes_the_torn_bytes_then_sends_itself_sigkill(tmp_path, monkeypatch):
    # os.kill is replaced, so this process survives to check what the hook did before the signal.
    kills = []
    monkeypatch.setattr(cf.os, "kill", lambda pid, sig: kills.append((pid, sig)))
    with open(tmp_path / "torn", "wb") as f:
        f.write(b"half")
        cf._kill_self(f)
        assert (tmp_path / "torn").read_bytes() == b"half"  # on disk, not left in the file's buffer
    cf._kill_self(None)  # the replace point: no file open
    assert kills == [(os.getpid(), signal.SIGKILL)] * 2
