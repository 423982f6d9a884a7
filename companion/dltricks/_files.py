"""Verified, atomic files: the integrity and crash-safety half of :mod:`dltricks.data` (internal).

A data file is trusted only after the SHA-256 of its decompressed bytes matches (gzip wrappers differ
between sources, the IDX contents do not); a file is written under a temporary name holding the writer's
process id and renamed into place, so its final name only ever holds complete contents; temporaries of
writers that died are removed by the next search.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import time
from pathlib import Path

from dltricks._procs import process_alive
from dltricks.idx import decompress

# ``.<stem>.<pid>.<random>.download`` / ``.tmp``: the temporary names of this module, with their writer.
_TEMPORARY = re.compile(r"\.[\w-]+\.(\d+)\.[^.]+\.(?:download|tmp)")
_OLD_TEMPORARY = re.compile(r"\.[\w-]+-ubyte\.[^.]+\.(?:download|tmp)")

# Files already verified, keyed by (path, size, mtime_ns, hash): re-hashing 47 MB on every call would make
# repeated loads in a notebook slow, and a change to the file changes its size or mtime.
VERIFIED: set[tuple[str, int, int, str]] = set()


def stat_key(path: Path, sha256: str) -> tuple[str, int, int, str]:
    """What identifies a verified file: its resolved path, size, modification time and expected hash."""
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns, sha256)


def verified_bytes(raw: bytes, sha256: str, where: str) -> bytes:
    """Decompress ``raw`` and check its SHA-256; the ValueError names ``where`` and both hashes."""
    try:
        data = decompress(raw)
    except ValueError as exc:
        raise ValueError(
            f"{where} is not a valid gzip file, it is truncated or corrupt ({exc.__cause__ or exc}); "
            f"expected the SHA-256 of its decompressed bytes to be {sha256}."
        ) from exc
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise ValueError(
            f"{where} failed verification: the SHA-256 of its decompressed bytes is {actual}, expected "
            f"{sha256}. It is corrupt, truncated, or not the Fashion-MNIST file of that name."
        )
    return data


def verify(path: Path, sha256: str) -> None:
    """Check ``path`` against ``sha256`` (see :func:`verified_bytes`), once per version of the file."""
    key = stat_key(path, sha256)
    if key not in VERIFIED:
        verified_bytes(path.read_bytes(), sha256, str(path))
        VERIFIED.add(key)


def _older_than(path: Path, seconds: float) -> bool:
    try:
        return time.time() - path.stat().st_mtime > seconds
    except OSError:
        return False


def clean_stale_temporaries(directory: Path) -> None:
    """Delete the temporary files of downloads and writes whose process is gone (killed mid-download)."""
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return
    for name in names:
        match = _TEMPORARY.fullmatch(name)
        if match is not None:
            if process_alive(int(match.group(1))):
                continue
        elif _OLD_TEMPORARY.fullmatch(name) is None or not _older_than(directory / name, 3600):
            continue  # not ours, or written without a process id (older versions) less than an hour ago
        with contextlib.suppress(OSError):  # gone already, or a cache we cannot write: leave it
            os.unlink(directory / name)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that the final name only ever holds the complete contents."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
