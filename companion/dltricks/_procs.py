"""Whether a process is alive: the one question stale-file cleanup (checkpoints, downloads) must ask."""

from __future__ import annotations

import os


def process_alive(pid: int) -> bool:
    """Whether a process with id ``pid`` runs on this machine (POSIX; assumed alive where unknown).

    ``pid <= 0`` means no owner was recorded: not alive. On Windows, where ``os.kill(pid, 0)`` would end
    the process, every process is assumed alive, so nothing of another's is ever deleted.
    """
    if pid <= 0:  # (os.kill(0 or -1, ...) would signal a whole process group)
        return False
    if pid == os.getpid() or os.name == "nt":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, owned by someone else
        return True
    return True
