"""One writer per checkpoint directory: an exclusive lock held for the run's lifetime.

Two runs writing checkpoints into one directory interleave their files: the resumed result mixes both runs
and still exits 0, and one run's start-up cleanup can delete the other's in-flight temporary file. The
``Checkpoint`` callback therefore takes :class:`DirectoryLock` when training begins and keeps it until
``fit`` returns or raises. The lock is the operating system's (``flock`` on POSIX, ``LockFileEx`` on
Windows, through the well-kept ``filelock`` library), so it is released when the holder's process dies,
even by ``SIGKILL``: a killed run never leaves a stale lock behind. A second run fails at once with a
:class:`~dltricks.checkpoint_file.CheckpointError` naming the holder (process id, host, start time), which
the holder writes to ``.lock.owner`` beside the lock file ``.lock``.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from filelock import FileLock, Timeout

from dltricks._procs import process_alive
from dltricks.checkpoint_file import CheckpointError

__all__ = ["DirectoryLock", "holder", "process_alive"]

LOCK_NAME, OWNER_NAME = ".lock", ".lock.owner"


class DirectoryLock:
    """An exclusive, non-blocking lock on ``directory`` (created if missing).

    Args:
        directory: the checkpoint directory.

    Raises:
        CheckpointError: from :meth:`acquire`, when another process (or another ``Checkpoint`` of this one)
            holds the directory.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._lock = FileLock(self.directory / LOCK_NAME, timeout=0, is_singleton=False, thread_local=False)

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._lock.is_locked

    def acquire(self) -> None:
        """Take the lock or fail at once, naming the holder; a holder may call it again (no-op).

        Raises:
            CheckpointError: when another process (or another lock of this one) holds the directory; the
                message names the holder.
        """
        if self.held:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            raise CheckpointError(
                f"{self.directory} is in use by another run ({holder(self.directory)}): one checkpoint "
                "directory takes one writer. Wait for it to finish, stop it, or use another directory"
            ) from None
        since = time.strftime("%Y-%m-%d %H:%M:%S")
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "since": since}
        (self.directory / OWNER_NAME).write_text(json.dumps(owner))

    def release(self) -> None:
        """Let the lock go (a no-op when not held)."""
        if self.held:
            (self.directory / OWNER_NAME).unlink(missing_ok=True)
            self._lock.release(force=True)


def holder(directory: str | os.PathLike[str]) -> str:
    """Who holds ``directory``, as the holder wrote it: ``process 123 on host, since 2026-01-01 10:00:00``."""
    try:
        owner = json.loads((Path(directory) / OWNER_NAME).read_text())
        return f"process {owner['pid']} on {owner['host']}, since {owner['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown: it has not written its name yet"
