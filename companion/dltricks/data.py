"""Find, verify, download and split Fashion-MNIST.

Each of the four files is looked up in this order, and the first one found is used:

1. ``$DLTRICKS_DATA``, directly or in its ``fashion-mnist/`` subdirectory (``.gz`` or uncompressed);
2. the user cache, :func:`cache_dir`;
3. the Debian package ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``);
4. a download from the official mirror into the cache (only with ``download=True``).

Every file is verified by the SHA-256 of its *decompressed* bytes, since gzip wrappers differ between
sources while the IDX contents do not. A source the user asked for is never skipped silently:
``$DLTRICKS_DATA`` naming a missing directory or a file, or a directory that cannot be read, is an error
that names it. The cache is the package's own: a corrupt copy there is deleted (or, when the cache cannot
be written, passed over with a warning), and temporary files of killed downloads (their process id is in
their names) are removed by the next search. Run ``python -m dltricks.data`` to see where each file
comes from.
Seeded splits and subsets of the loaded arrays are in :mod:`dltricks.splits`.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from dltricks._checks import check_type
from dltricks._files import (
    VERIFIED,
    atomic_write,
    clean_stale_temporaries,
    stat_key,
    verified_bytes,
    verify,
)
from dltricks.idx import read_idx

# SHA-256 of the decompressed IDX bytes. Tests replace this dict (and MIRROR, DEBIAN_DIR) with monkeypatch,
# so every function reads these module globals at call time instead of binding them as defaults.
FASHION_MNIST_FILES: dict[str, str] = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
CLASS_NAMES: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
MIRROR = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
ENV_VAR = "DLTRICKS_DATA"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
DEBIAN_PACKAGE = "dataset-fashion-mnist"
_DOWNLOAD_TIMEOUT_S = 60


class DataNotFoundError(FileNotFoundError):
    """No source (environment variable, cache, Debian package, mirror) provided the data set."""


class FashionMNIST(NamedTuple):
    """The four Fashion-MNIST arrays: numpy (uint8 images, int64 labels) or torch tensors."""

    x_train: Any
    y_train: Any
    x_test: Any
    y_test: Any


def cache_dir() -> Path:
    """Return the download cache, ``$XDG_CACHE_HOME/dltricks/fashion-mnist`` or ``~/.cache/...``.

    Returns:
        The directory path; it is created only when something is downloaded into it.
    """
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    # The XDG spec says relative values are invalid and must be ignored.
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "dltricks" / "fashion-mnist"


def _first_existing(directories: list[Path], stem: str) -> Path | None:
    for directory in directories:
        for name in (stem, stem + ".gz"):
            if _is_file(directory / name):
                return directory / name
    return None


def _is_file(path: Path) -> bool:
    """``path.is_file()``, but an unreadable directory is named as such (not as the file looked for)."""
    try:
        return path.is_file()
    except PermissionError as exc:
        raise PermissionError(
            f"Cannot look for {path.name} in {path.parent}: permission denied on the directory "
            f"({exc.strerror}). Make it readable, or point ${ENV_VAR} at a readable copy of the data."
        ) from exc


def _check_env_dir() -> None:
    """``$DLTRICKS_DATA``, when set, must name an existing directory: the user asked for it."""
    env = os.environ.get(ENV_VAR, "")
    if not env:
        return
    path = Path(env)
    if not path.exists():
        raise DataNotFoundError(
            f"${ENV_VAR} is set to {env}, which does not exist. Point it at the directory holding the "
            f"Fashion-MNIST files, or unset it to use the cache {cache_dir()} or {DEBIAN_DIR}."
        )
    if not path.is_dir():
        raise NotADirectoryError(
            f"${ENV_VAR} is set to {env}, which is a file, not a directory. Point it at the directory "
            "holding the Fashion-MNIST files (.gz or not, optionally in fashion-mnist/)."
        )


def _find_local(stem: str, sha256: str) -> tuple[Path, str] | None:
    """Return ``(path, source)`` of the first local copy of ``stem``, verified; None if there is none."""
    env = os.environ.get(ENV_VAR, "")
    if env:
        path = _first_existing([Path(env), Path(env) / "fashion-mnist"], stem)
        if path is not None:
            # A bad file the user pointed us at is an error, not something to silently route around.
            verify(path, sha256)
            return path, "env"
    cached = cache_dir() / stem
    try:
        in_cache = cached.is_file()
    except PermissionError as exc:  # an unreadable cache must not hide the other sources
        warnings.warn(f"Skipping the cache {cached.parent}: permission denied ({exc.strerror})", stacklevel=4)
        in_cache = False
    if in_cache:
        try:
            verify(cached, sha256)
            return cached, "cache"
        except ValueError as exc:
            # The cache is ours to repair: drop the bad copy and fall through to the other sources.
            try:
                cached.unlink(missing_ok=True)
                warnings.warn(f"Deleted a corrupt cached file; using another source: {exc}", stacklevel=4)
            except OSError as err:  # a cache we cannot write: pass over the bad copy, do not stop here
                warnings.warn(
                    f"Passing over a corrupt cached file that cannot be deleted ({err.strerror}): {exc}",
                    stacklevel=4,
                )
    path = _first_existing([DEBIAN_DIR], stem)
    if path is not None:
        verify(path, sha256)
        return path, "debian"
    return None


def _download(stem: str, sha256: str, mirror: str) -> Path:
    """Fetch ``<mirror><stem>.gz`` into the cache, verify it, and store the decompressed IDX bytes."""
    import pooch  # imported here: only downloads need it (and, through it, requests)

    url = mirror.rstrip("/") + "/" + stem + ".gz"
    target = cache_dir() / stem
    target.parent.mkdir(parents=True, exist_ok=True)
    # The process id in the name lets a later run delete the file if this process is killed mid-download.
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{stem}.{os.getpid()}.", suffix=".download")
    try:
        with os.fdopen(fd, "w+b") as f:
            pooch.HTTPDownloader(progressbar=False, timeout=_DOWNLOAD_TIMEOUT_S)(url, f, None)
            f.seek(0)
            raw = f.read()
    finally:
        # Whatever happened (success, HTTP error, Ctrl-C), the raw download goes: we keep only verified IDX.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    data = verified_bytes(raw, sha256, f"The download from {url}")
    atomic_write(target, data)
    VERIFIED.add(stat_key(target, sha256))
    return target


def _not_found(missing: list[str], mirror: str, reason: str) -> DataNotFoundError:
    env = os.environ.get(ENV_VAR, "")
    return DataNotFoundError(
        f"Fashion-MNIST file(s) not found: {', '.join(missing)}.\n"
        f"Searched: ${ENV_VAR} ({env or 'not set'}), the cache {cache_dir()}, and {DEBIAN_DIR}.\n"
        "Provide the data in one of these ways:\n"
        f"  - set {ENV_VAR} to a directory holding the files (.gz or not, optionally in fashion-mnist/);\n"
        f"  - install the Debian package {DEBIAN_PACKAGE}: sudo apt-get install {DEBIAN_PACKAGE};\n"
        f"  - download from the mirror {mirror} with download=True.\n"
        f"{reason}"
    )


def _locate(download: bool, mirror: str | None) -> dict[str, tuple[Path, str]]:
    """Map each stem to ``(verified path, source)``; ``source`` is env, cache, debian or download."""
    check_type("download", download, bool, "a bool")
    mirror = MIRROR if mirror is None else check_type("mirror", mirror, str, "a URL string")
    _check_env_dir()
    clean_stale_temporaries(cache_dir())
    files = dict(FASHION_MNIST_FILES)
    found = {stem: _find_local(stem, sha) for stem, sha in files.items()}
    missing = [stem for stem, hit in found.items() if hit is None]
    if missing and not download:
        raise _not_found(missing, mirror, "No download was attempted because download=False.")
    for stem in missing:
        try:
            found[stem] = (_download(stem, files[stem], mirror), "download")
        except OSError as exc:  # requests' errors are OSErrors too: connection, HTTP status, timeouts
            still = [s for s in missing if found[s] is None]  # the files stored before it stay
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):  # a full disk is no missing file: say what happened
                raise OSError(exc.errno, (
                    f"The cache {cache_dir()} is full: storing the download of {stem} failed "
                    f"({exc.strerror}). Still missing: {', '.join(still)}. Free space there, or set "
                    f"{ENV_VAR} to a directory holding the files")) from exc  # fmt: skip
            raise _not_found(still, mirror, f"The download failed at {stem}: {exc}") from exc
    return {stem: hit for stem, hit in found.items() if hit is not None}


def locate_fashion_mnist(*, download: bool = True, mirror: str | None = None) -> dict[str, Path]:
    """Find (and if needed download) the four Fashion-MNIST files, each verified by SHA-256.

    Args:
        download: Fetch missing files from the mirror into :func:`cache_dir`.
        mirror: Base URL holding ``<stem>.gz``; None means :data:`MIRROR`, the official mirror.

    Returns:
        A dict mapping each file stem of :data:`FASHION_MNIST_FILES` to its verified path.

    Raises:
        TypeError: If ``download`` is not a bool or ``mirror`` not a string.
        ValueError: If a file found in ``$DLTRICKS_DATA``, the Debian directory or a download fails
            verification; the message names the file and both hashes.
        DataNotFoundError: If some file has no source (one message lists every way to provide it), or
            ``$DLTRICKS_DATA`` names a path that does not exist.
        NotADirectoryError: If ``$DLTRICKS_DATA`` names a file.
        PermissionError: If ``$DLTRICKS_DATA`` or the Debian directory cannot be read; it names the directory.
        OSError: (``ENOSPC``, ``EDQUOT``) If the cache's disk is full; it names the files still missing.
    """
    return {stem: path for stem, (path, _) in _locate(download, mirror).items()}


@functools.lru_cache(maxsize=2)
def _load_arrays(key: tuple[tuple[str, str, int, int], ...]) -> tuple[np.ndarray, ...]:
    """Parse the four files; keyed on (path, hash, size, mtime) so a changed file is read again."""
    arrays = [read_idx(verified_bytes(Path(path).read_bytes(), sha, path)) for path, sha, _, _ in key]
    x_train, y_train, x_test, y_test = arrays
    for x, y, part in ((x_train, y_train, "train"), (x_test, y_test, "test")):
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise ValueError(f"Fashion-MNIST {part} files disagree: images {x.shape}, labels {y.shape}.")
    out = (x_train, y_train.astype(np.int64), x_test, y_test.astype(np.int64))
    for array in out:
        array.flags.writeable = False  # the cached arrays are shared; callers get copies
    return out


def load_fashion_mnist(
    *, download: bool = True, as_tensors: bool = False, mirror: str | None = None
) -> FashionMNIST:
    """Load Fashion-MNIST, parsed once per process and copied out on each call.

    Args:
        download: Fetch missing files from the mirror (see :func:`locate_fashion_mnist`).
        as_tensors: Return torch tensors: float32 images in [0, 1] of shape (N, 1, 28, 28) and int64 labels.
        mirror: Base URL of the mirror; None means :data:`MIRROR`.

    Returns:
        ``FashionMNIST(x_train, y_train, x_test, y_test)``; by default uint8 images of shape (N, 28, 28)
        and int64 labels as numpy arrays (60000 train and 10000 test examples).

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If a file fails verification.
        DataNotFoundError, NotADirectoryError, PermissionError: As :func:`locate_fashion_mnist`.
    """
    check_type("as_tensors", as_tensors, bool, "a bool")
    paths = locate_fashion_mnist(download=download, mirror=mirror)
    # In the order of FASHION_MNIST_FILES (train images, train labels, test images, test labels).
    key = tuple(
        (str(p), FASHION_MNIST_FILES[s], p.stat().st_size, p.stat().st_mtime_ns) for s, p in paths.items()
    )
    arrays = _load_arrays(key)
    if not as_tensors:
        return FashionMNIST(*(a.copy() for a in arrays))
    import torch  # imported here so that finding the data does not pay torch's import time

    # uint8 -> float32 in torch: one pass, multithreaded, and the copy never aliases the cached array.
    x_train, y_train, x_test, y_test = (torch.from_numpy(a.copy()) for a in arrays)
    return FashionMNIST(
        x_train.unsqueeze(1).float() / 255, y_train, x_test.unsqueeze(1).float() / 255, y_test
    )


def main(argv: list[str] | None = None) -> int:
    """Print where each Fashion-MNIST file was found; return 0, or print the error and return 1."""
    parser = argparse.ArgumentParser(prog="python -m dltricks.data", description=main.__doc__)
    parser.add_argument("--no-download", action="store_true", help="do not fetch missing files")
    args = parser.parse_args(argv)
    try:
        found = _locate(not args.no_download, None)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for stem, (path, source) in found.items():
        print(f"{stem:<26} {source:<8} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
