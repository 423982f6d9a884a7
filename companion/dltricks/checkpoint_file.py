"""The checkpoint file: survives a kill at any moment, refuses damaged or hostile files.

A file holds a short text header, then a ``torch.save`` archive of tensors and JSON-like primitives::

    dltricks checkpoint v1
    sha256 <64 hex digits of the archive>
    bytes <20-digit size of the archive>
    <the archive>

Loading checks the header, the size (a truncated file) and the SHA-256 (a damaged one) before anything is
unpickled, then unpickles with ``torch.load(weights_only=True)``, PyTorch's restricted unpickler that
builds only tensors and primitive containers: a file crafted to run code when unpickled is refused even
when its checksum is right. Every failure raises :class:`CheckpointError` naming the file and the fault.

Writes are atomic: the bytes go to a temporary file in the same directory, are flushed and ``fsync``-ed,
and ``os.replace`` puts the file under its final name, which readers therefore see whole or not at all.
Names sort by training step (``ckpt-000001230.pt``). The environment variable
``DLTRICKS_TEST_KILL_DURING_SAVE=<n>[:replace]`` is a test-only hook: the n-th save of the process
``SIGKILL``-s it halfway through writing the temporary file (or, with ``:replace``, just before the rename).
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import re
import signal
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from dltricks._checks import check_int, check_type, fail

MAGIC = b"dltricks checkpoint v"
HEADER = re.compile(rb"dltricks checkpoint v1\nsha256 ([0-9a-f]{64})\nbytes (\d{20})\n")
HEADER_SIZE = len(MAGIC) + 2 + 7 + 64 + 1 + 6 + 20 + 1
NAME = re.compile(r"ckpt-(\d{9,})\.pt")
PATHLIKE = (str, os.PathLike)
PAYLOAD_KEYS = ("format", "model", "optimizer", "counters", "history", "loader", "callbacks", "rng")
_saves = 0  # saves by this process, for the test-only kill hook


class CheckpointError(ValueError):
    """A checkpoint file is truncated, damaged, not a checkpoint, unsafe, or does not fit the run."""


def checkpoint_name(step: int) -> str:
    """The file name of the checkpoint taken after ``step`` training steps: ``ckpt-000001230.pt``.

    Raises:
        TypeError: for a ``step`` of the wrong type.
        ValueError: for a ``step`` out of its allowed range.
    """
    return f"ckpt-{check_int('step', step, minimum=0):09d}.pt"


def list_checkpoints(directory: str | os.PathLike[str]) -> list[Path]:
    """The checkpoint files of ``directory``, oldest (lowest step) first, not verified.

    Raises:
        TypeError: for a ``directory`` of the wrong type.
    """
    directory = Path(check_type("directory", directory, PATHLIKE, "a directory path"))
    if not directory.is_dir():
        return []
    return sorted((p for p in directory.iterdir() if NAME.fullmatch(p.name)), key=_step)


def save_checkpoint(path: str | os.PathLike[str], payload: Mapping[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically, with a checksum; return the path.

    Args:
        path: the file to write; its directory must exist. An existing file is replaced atomically.
        payload: a dict of tensors, numbers, strings, booleans, ``None``, and lists, tuples and dicts of
            these (state dicts qualify). Anything else would need pickle to load, so it is refused here,
            before a file is written, rather than at load time.

    Raises:
        TypeError: if ``path`` is not a path or ``payload`` holds something other than the above.
    """
    path = Path(check_type("path", path, PATHLIKE, "a file path"))
    check_type("payload", payload, Mapping, "a dict of tensors and JSON-like primitives")
    _check_storable(payload, "payload")
    buffer = io.BytesIO()
    torch.save(dict(payload), buffer)
    body = buffer.getvalue()
    digest = hashlib.sha256(body).hexdigest()
    data = MAGIC + f"1\nsha256 {digest}\nbytes {len(body):020d}\n".encode() + body
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    kill_at = _test_kill_point()
    try:
        with open(tmp, "wb") as f:
            if kill_at == "write":
                f.write(data[: len(data) // 2])  # a torn file, as a crash in mid-write leaves it
                _kill_self(f)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the name points at them
        if kill_at == "replace":
            _kill_self(None)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)  # makes the rename itself durable
    return path


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and verify a checkpoint written by :func:`save_checkpoint`; tensors are loaded on the CPU.

    Raises:
        TypeError: if ``path`` is not a path.
        FileNotFoundError: if there is no such file.
        CheckpointError: if the file is not a checkpoint, is truncated, fails its checksum, or holds
            anything but tensors and primitives (refused by the restricted unpickler, never run).
    """
    path = Path(check_type("path", path, PATHLIKE, "a file path"))
    data = path.read_bytes()
    if not data:
        raise CheckpointError(f"{path} is truncated: the file is empty")
    if not (data.startswith(MAGIC) or MAGIC.startswith(data)):
        raise CheckpointError(f"{path} is not a dltricks checkpoint (no '{MAGIC.decode()}' header)")
    if len(data) < HEADER_SIZE:
        raise CheckpointError(f"{path} is truncated: {len(data)} bytes, shorter than the header")
    header = HEADER.fullmatch(data[:HEADER_SIZE])
    if header is None:
        raise CheckpointError(f"{path} has a damaged or unsupported header: {data[:HEADER_SIZE]!r}")
    body, size = data[HEADER_SIZE:], int(header.group(2))
    if len(body) != size:
        fault = "truncated" if len(body) < size else "damaged (trailing bytes)"
        raise CheckpointError(f"{path} is {fault}: its archive has {len(body)} bytes, the header says {size}")
    if hashlib.sha256(body).hexdigest() != header.group(1).decode():
        raise CheckpointError(f"{path} is damaged: checksum mismatch (SHA-256 of the archive differs)")
    try:
        payload = torch.load(io.BytesIO(body), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's message also suggests weights_only=False; keep only what names the refused object
        lines = [line for line in str(err).splitlines() if "GLOBAL" in line or "nsupported" in line]
        reason = (lines or [type(err).__name__])[0][:300]
        raise CheckpointError(
            f"{path}: refused unsafe content (objects beyond tensors and primitives): {reason}"
        ) from err
    except Exception as err:  # a valid checksum over bytes torch cannot read: written by something else
        raise CheckpointError(f"{path} holds no readable torch archive: {err}") from err
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path} is not a dltricks checkpoint: it holds a {type(payload).__name__}")
    return payload


def latest_checkpoint(directory: str | os.PathLike[str]) -> Path | None:
    """The newest checkpoint of ``directory`` that verifies, or ``None``; each newer bad file is warned of."""
    found = _newest_good(directory)
    return None if found is None else found[0]


def _newest_good(
    directory: str | os.PathLike[str], quarantine: bool = False, refuse: bool = False
) -> tuple[Path, dict] | None:
    """The newest checkpoint of ``directory`` that verifies, and its payload; ``None`` when there is none.

    Each newer file that fails is warned of and, with ``quarantine``, renamed to ``<name>.corrupt`` once a
    good one is found (the resumed run writes over their steps again and must never fall back to them).
    With ``refuse``, a directory whose every checkpoint fails raises instead (the files keep their names).

    Raises:
        CheckpointError: with ``refuse``, when checkpoints exist and none verifies: each file and its fault.
    """
    bad: list[tuple[Path, CheckpointError]] = []
    found = None
    for path in reversed(list_checkpoints(directory)):
        try:
            found = path, load_checkpoint(path)
            break
        except CheckpointError as err:
            bad.append((path, err))
    if found is None and bad and refuse:
        faults = "; ".join(str(fault) for _, fault in bad)  # each message starts with its file's path
        raise CheckpointError(
            f"cannot resume from {directory}: none of its {len(bad)} checkpoint(s) can be loaded ({faults}). "
            "Nothing was renamed or deleted. Repair or remove them to start afresh, or resume from a "
            "checkpoint file that verifies"
        )
    for path, fault in bad:
        note = ""
        if quarantine and found is not None:  # kept for inspection, out of the way of the resumed run
            path.replace(path.with_name(path.name + ".corrupt"))
            note = f"; renamed to {path.name}.corrupt"
        warnings.warn(f"skipping bad checkpoint {path}: {fault}{note}", RuntimeWarning, stacklevel=3)
    return found


def _step(path: Path) -> int:
    match = NAME.fullmatch(path.name)
    return -1 if match is None else int(match.group(1))


def _check_storable(value: Any, where: str) -> None:
    """Refuse anything ``torch.load(weights_only=True)`` could not rebuild without pickled objects."""
    if isinstance(value, (torch.Tensor, str, int, float, bool, type(None))):
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                fail(f"{where} keys", "strings or integers", key, TypeError)
            _check_storable(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_storable(item, f"{where}[{i}]")
    else:
        fail(where, "a tensor, number, string, bool, None, or a list/tuple/dict of these", value, TypeError)


def _test_kill_point() -> str | None:
    """Test-only: count this save; where the ``DLTRICKS_TEST_KILL_DURING_SAVE`` hook kills it, if at all."""
    global _saves
    _saves += 1
    spec = os.environ.get("DLTRICKS_TEST_KILL_DURING_SAVE")
    if not spec:
        return None
    count, _, where = spec.partition(":")
    return (where or "write") if int(count) == _saves else None


def _kill_self(f: Any) -> None:
    if f is not None:
        f.flush()
        os.fsync(f.fileno())
    os.kill(os.getpid(), signal.SIGKILL)


def _fsync_directory(directory: Path) -> None:
    if os.name == "nt":  # Windows cannot open a directory; its rename is already durable enough here
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot sync a directory; the rename is still atomic
        pass
    finally:
        os.close(fd)
