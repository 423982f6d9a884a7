"""Tests of dltricks.idx (the IDX format) and dltricks.data (finding, downloading and splitting the data)."""

from __future__ import annotations

import errno
import gzip
import hashlib
import http.server
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from dltricks import data, idx
from dltricks.data import DataNotFoundError, load_fashion_mnist, locate_fashion_mnist

OFFICIAL_MIRROR = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
STEMS = list(data.FASHION_MNIST_FILES)


# ---------------------------------------------------------------------------------------------- IDX format


@settings(max_examples=80, deadline=None, database=None)
@given(
    array=hnp.arrays(
        dtype=st.sampled_from([np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]),
        shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5),
    ),
    compress=st.booleans(),
)
def test_idx_round_trip(array: np.ndarray, compress: bool) -> None:
    raw = idx.write_idx(array, compress=compress)
    assert raw.startswith(idx.GZIP_MAGIC) == compress
    out = idx.read_idx(idx.decompress(raw))
    assert out.shape == array.shape and out.dtype == array.dtype
    assert out.tobytes() == array.tobytes()  # bitwise, so NaNs and -0.0 count too
    # A gzip wrapper written by someone else (not our mtime=0 one) decompresses to the same bytes.
    plain = idx.write_idx(array)
    assert idx.decompress(gzip.compress(plain)) == plain == idx.decompress(plain)


def test_idx_layout_is_big_endian() -> None:
    raw = idx.write_idx(np.array([[1, 2, 3], [4, 5, 6]], dtype=np.uint8))
    assert raw == b"\x00\x00\x08\x02" + b"\x00\x00\x00\x02\x00\x00\x00\x03" + bytes([1, 2, 3, 4, 5, 6])
    assert idx.write_idx(np.array([1], dtype="<i4")) == b"\x00\x00\x0c\x01\x00\x00\x00\x01\x00\x00\x00\x01"
    assert idx.read_idx(b"\x00\x00\x0b\x01\x00\x00\x00\x01\x01\x02").tolist() == [0x0102]


HEADER_3 = b"\x00\x00\x08\x01\x00\x00\x00\x03"  # uint8, one dimension of 3


@pytest.mark.parametrize(
    ("raw", "pattern"),
    [
        (b"\x01\x00\x08\x01\x00\x00\x00\x01\x07", "two zero bytes"),
        (gzip.compress(HEADER_3 + b"abc"), "decompress"),
        (b"\x00\x00\x0a\x01\x00\x00\x00\x01\x07", "0x0A"),
        (HEADER_3 + b"ab", r"3 bytes .*truncated: found 2 bytes"),
        (HEADER_3 + b"abcd", r"3 bytes .*oversized: found 4 bytes"),
        (b"\x00\x00\x08\x02\x00\x00\x00\x03", "header with 2 dimensions"),
        (b"\x00\x00", "at least 4 bytes"),
    ],
    ids=["magic", "gzip", "dtype", "truncated", "oversized", "short-header", "tiny"],
)
def test_read_idx_rejects_malformed(raw: bytes, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern) as info:
        idx.read_idx(raw)
    assert "`data` must be" in str(info.value) and "Received: data=<" in str(info.value)


def test_idx_argument_errors() -> None:
    with pytest.raises(TypeError, match=re.escape("Received: data=[0, 0]")):
        idx.read_idx([0, 0])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=re.escape("Received: array.dtype=bool")):
        idx.write_idx(np.zeros(3, dtype=bool))
    with pytest.raises(TypeError, match=re.escape("Received: array=[1, 2]")):
        idx.write_idx([1, 2])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=re.escape("Received: raw='text'")):
        idx.decompress("text")  # type: ignore[arg-type]


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_decompress_rejects_bad_gzip(damage: str) -> None:
    good = gzip.compress(bytes(range(256)) * 40)
    bad = good[: len(good) // 2] if damage == "truncate" else good[:-8] + bytes(8)  # zeroed CRC and size
    with pytest.raises(ValueError, match=r"`raw` must be a complete, valid gzip stream\. Received: raw=<"):
        idx.decompress(bad)
    assert idx.decompress(b"plain bytes") == b"plain bytes"


# ------------------------------------------------------------------------------ a small fake Fashion-MNIST


def _fake_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "train-images-idx3-ubyte": rng.integers(0, 256, (30, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.permutation(np.arange(30) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.arange(10, dtype=np.uint8),
    }


FAKE = _fake_arrays()
FAKE_IDX = {stem: idx.write_idx(a) for stem, a in FAKE.items()}
FAKE_HASHES = {stem: hashlib.sha256(raw).hexdigest() for stem, raw in FAKE_IDX.items()}


def _write_fake(directory: Path, *, gz: bool) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for stem, raw in FAKE_IDX.items():
        (directory / (stem + ".gz" if gz else stem)).write_bytes(gzip.compress(raw) if gz else raw)


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def _cache_listing() -> set[str]:
    """Every name in the cache directory, hidden temporary files included."""
    cache = data.cache_dir()
    return set(os.listdir(cache)) if cache.exists() else set()


@pytest.fixture
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No real source is visible: no env var, a cache under tmp_path, no Debian dir, fake hashes."""
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(data, "DEBIAN_DIR", tmp_path / "no-debian")
    monkeypatch.setattr(data, "FASHION_MNIST_FILES", dict(FAKE_HASHES))
    monkeypatch.setattr(data, "MIRROR", _closed_port_url())
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)  # requests would send 127.0.0.1 through a proxy
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    return tmp_path


class Mirror:
    """A local HTTP mirror serving ``files`` (name -> bytes) and counting the requests."""

    def __init__(self) -> None:
        self.files = {stem + ".gz": gzip.compress(raw) for stem, raw in FAKE_IDX.items()}
        self.hits: list[str] = []
        self.truncate = False  # announce more bytes than are sent, like a dropped connection
        self.stall = False  # send half of the body, then hang (a download that is killed from outside)
        mirror = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                mirror.hits.append(self.path)
                body = mirror.files.get(self.path.lstrip("/"))
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body) + (1000 if mirror.truncate else 0)))
                self.end_headers()
                if mirror.stall:
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    time.sleep(20)
                    return
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def mirror(isolated: Path, monkeypatch: pytest.MonkeyPatch):
    server = Mirror()
    monkeypatch.setattr(data, "MIRROR", server.url)
    yield server
    server.close()


def _assert_loads_fake(loaded: data.FashionMNIST) -> None:
    expected = [FAKE[s] for s in STEMS]
    for got, want in zip(loaded, expected, strict=True):
        np.testing.assert_array_equal(got, want)
    assert loaded.x_train.dtype == np.uint8 and loaded.y_train.dtype == np.int64


# --------------------------------------------------------------------------------------------- downloads


def test_download_is_verified_cached_and_loaded(mirror: Mirror, capsys: pytest.CaptureFixture[str]) -> None:
    paths = locate_fashion_mnist()
    assert sorted(mirror.hits) == sorted("/" + s + ".gz" for s in STEMS)
    assert paths == {s: data.cache_dir() / s for s in STEMS}
    assert _cache_listing() == set(STEMS)  # decompressed IDX under the final names, no temp files left
    for stem, path in paths.items():
        assert path.read_bytes() == FAKE_IDX[stem]

    _assert_loads_fake(load_fashion_mnist())
    tensors = load_fashion_mnist(as_tensors=True)
    assert tensors.x_train.shape == (30, 1, 28, 28) and tensors.x_train.dtype == torch.float32
    assert torch.equal(tensors.x_train[:, 0], torch.from_numpy(FAKE[STEMS[0]]).float() / 255)
    assert tensors.y_test.dtype == torch.int64 and tensors.y_test.tolist() == list(range(10))
    assert data.main([]) == 0
    assert capsys.readouterr().out.count(" cache ") == 4
    assert len(mirror.hits) == 4  # everything after the first call came from the cache


def test_loaded_arrays_are_copies(mirror: Mirror) -> None:
    first = load_fashion_mnist()
    first.x_train[:] = 0
    first.y_train[:] = -1
    _assert_loads_fake(load_fashion_mnist())


@pytest.mark.parametrize("damage", ["wrong-content", "bad-gzip", "not-gzip"])
def test_corrupt_download_never_reaches_the_cache(mirror: Mirror, damage: str) -> None:
    stem = STEMS[1]
    good = mirror.files[stem + ".gz"]
    mirror.files[stem + ".gz"] = {
        "wrong-content": gzip.compress(idx.write_idx(np.zeros(30, dtype=np.uint8))),
        "bad-gzip": good[:-20],
        "not-gzip": b"<html>an error page</html>",
    }[damage]
    with pytest.raises(ValueError, match=re.escape(mirror.url + stem + ".gz")) as info:
        locate_fashion_mnist()
    assert FAKE_HASHES[stem] in str(info.value)
    listing = _cache_listing()
    assert stem not in listing
    assert not [name for name in listing if name.startswith(".")], listing  # no temp files left


@pytest.mark.parametrize("failure", ["interrupted", "404"])
def test_failed_download_leaves_nothing(mirror: Mirror, failure: str) -> None:
    if failure == "interrupted":
        mirror.truncate = True
    else:
        mirror.files.clear()
    with pytest.raises(DataNotFoundError, match="download failed") as info:
        load_fashion_mnist()
    message = str(info.value)
    assert (
        data.ENV_VAR in message
        and mirror.url in message
        and "apt-get install dataset-fashion-mnist" in message
    )
    assert _cache_listing() == set()


def test_a_full_disk_is_named_and_not_called_a_missing_file(
    mirror: Mirror, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: "Fashion-MNIST file(s) not found: <all four> ... The download failed: [Errno 28] No space left"
    # although the downloads had worked and two files were already stored.
    real, calls = data.atomic_write, []

    def third_fills_the_disk(target, payload):
        calls.append(target)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(target, payload)

    monkeypatch.setattr(data, "atomic_write", third_fills_the_disk)
    with pytest.raises(OSError) as info:
        locate_fashion_mnist()
    message = str(info.value)
    assert info.value.errno == errno.ENOSPC and not isinstance(info.value, DataNotFoundError)
    assert "not found" not in message and "download failed" not in message
    assert f"storing the download of {STEMS[2]} failed (No space left on device)" in message
    assert f"Still missing: {STEMS[2]}, {STEMS[3]}." in message
    assert str(data.cache_dir()) in message


def test_corrupt_cache_file_is_replaced(mirror: Mirror) -> None:
    _write_fake(data.cache_dir(), gz=False)
    (data.cache_dir() / STEMS[2]).write_bytes(FAKE_IDX[STEMS[2]][:-5])
    with pytest.warns(UserWarning, match=re.escape(str(data.cache_dir() / STEMS[2]))):
        paths = locate_fashion_mnist()
    assert mirror.hits == ["/" + STEMS[2] + ".gz"]
    assert paths[STEMS[2]].read_bytes() == FAKE_IDX[STEMS[2]]
    assert _cache_listing() == set(STEMS)


def test_a_killed_download_leaves_no_temporary_file_after_the_next_run(mirror: Mirror) -> None:
    """A real process, SIGKILL-ed mid-download, leaves its temporary file; the next search removes it,
    and never one of a process that is still alive."""
    mirror.stall = True
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from dltricks import data; data._download({STEMS[0]!r}, 'x', {mirror.url!r})",
        ],
        env=dict(os.environ),  # the isolated cache (XDG_CACHE_HOME) of this test
    )
    try:
        deadline = time.monotonic() + 60
        while not [n for n in _cache_listing() if n.endswith(".download")] and time.monotonic() < deadline:
            time.sleep(0.05)
        (left,) = [n for n in _cache_listing() if n.endswith(".download")]
        assert f".{child.pid}." in left
        while not (data.cache_dir() / left).stat().st_size and time.monotonic() < deadline:
            time.sleep(0.05)  # bytes arrived: it is mid-download
    finally:
        child.kill()
        child.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        alive = f".{STEMS[1]}.{live.pid}.abcd1234.download"
        (data.cache_dir() / alive).write_bytes(b"in progress")
        assert left in _cache_listing()
        mirror.stall = False
        _assert_loads_fake(load_fashion_mnist())
        assert _cache_listing() == set(STEMS) | {alive}  # the killed one's file is gone, the live one's kept
    finally:
        live.kill()
        live.wait()


# ----------------------------------------------------------------------------------------- local sources


def test_env_var_naming_a_missing_directory_or_a_file_is_refused(isolated: Path, monkeypatch) -> None:
    _write_fake(isolated / "debian", gz=True)  # a good source exists, and must not be used silently
    monkeypatch.setattr(data, "DEBIAN_DIR", isolated / "debian")
    monkeypatch.setenv(data.ENV_VAR, str(isolated / "typo"))
    with pytest.raises(DataNotFoundError, match=r"DLTRICKS_DATA is set to .*typo, which does not exist"):
        locate_fashion_mnist(download=False)
    (isolated / "a-file").write_bytes(b"x")
    monkeypatch.setenv(data.ENV_VAR, str(isolated / "a-file"))
    with pytest.raises(NotADirectoryError, match=r"DLTRICKS_DATA is set to .*a-file, which is a file"):
        locate_fashion_mnist(download=False)
    monkeypatch.setenv(data.ENV_VAR, "")  # set but empty: as unset
    assert locate_fashion_mnist(download=False)[STEMS[0]].parent == isolated / "debian"


def _deny(monkeypatch: pytest.MonkeyPatch, method: str, under: Path) -> None:
    """Make ``Path.<method>`` raise PermissionError for paths in ``under`` (chmod does not stop root)."""
    original = getattr(Path, method)

    def denied(self: Path, *args, **kwargs):
        if self.parent == under:
            raise PermissionError(13, "Permission denied", str(self))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Path, method, denied)


def test_a_corrupt_file_in_a_read_only_cache_does_not_block_the_debian_copy(
    isolated: Path, monkeypatch
) -> None:
    _write_fake(data.cache_dir(), gz=False)
    (data.cache_dir() / STEMS[2]).write_bytes(b"corrupt")
    _write_fake(isolated / "debian", gz=True)
    monkeypatch.setattr(data, "DEBIAN_DIR", isolated / "debian")
    _deny(monkeypatch, "unlink", data.cache_dir())
    with pytest.warns(UserWarning, match=r"Passing over a corrupt cached file that cannot be deleted"):
        paths = locate_fashion_mnist(download=False)
        _assert_loads_fake(load_fashion_mnist(download=False))
    assert paths[STEMS[2]] == isolated / "debian" / (STEMS[2] + ".gz")
    assert paths[STEMS[0]] == data.cache_dir() / STEMS[0]


def test_an_unreadable_directory_is_named_not_a_missing_file(isolated: Path, monkeypatch) -> None:
    env = isolated / "env"
    _write_fake(env, gz=True)
    monkeypatch.setenv(data.ENV_VAR, str(env))
    _deny(monkeypatch, "is_file", env)
    with pytest.raises(
        PermissionError, match=rf"Cannot look for {STEMS[0]} in {re.escape(str(env))}: permission"
    ):
        locate_fashion_mnist(download=False)
    monkeypatch.delenv(data.ENV_VAR)
    _write_fake(isolated / "debian", gz=True)
    monkeypatch.setattr(data, "DEBIAN_DIR", isolated / "debian")
    _write_fake(data.cache_dir(), gz=False)
    _deny(monkeypatch, "is_file", data.cache_dir())  # an unreadable cache is passed over, with a warning
    with pytest.warns(UserWarning, match=r"Skipping the cache .*permission denied"):
        assert locate_fashion_mnist(download=False)[STEMS[0]].parent == isolated / "debian"


@pytest.mark.parametrize(("subdir", "gz"), [("", True), ("fashion-mnist", False)])
def test_env_dir_comes_first(isolated: Path, monkeypatch: pytest.MonkeyPatch, subdir: str, gz: bool) -> None:
    env = isolated / "env"
    _write_fake(env / subdir, gz=gz)
    _write_fake(isolated / "debian", gz=True)
    monkeypatch.setattr(data, "DEBIAN_DIR", isolated / "debian")
    monkeypatch.setenv(data.ENV_VAR, str(env))
    paths = locate_fashion_mnist(download=False)
    assert paths[STEMS[0]] == env / subdir / (STEMS[0] + (".gz" if gz else ""))
    _assert_loads_fake(load_fashion_mnist(download=False))
    monkeypatch.delenv(data.ENV_VAR)
    assert locate_fashion_mnist(download=False)[STEMS[0]].parent == isolated / "debian"


@pytest.mark.parametrize("damage", ["garbage", "truncated-gzip", "truncated-idx", "other-data"])
@pytest.mark.parametrize("where", ["env", "debian"])
def test_bad_local_file_is_an_error_naming_it(
    isolated: Path, monkeypatch: pytest.MonkeyPatch, damage: str, where: str
) -> None:
    directory = isolated / where
    _write_fake(directory, gz=True)
    monkeypatch.setattr(data, "DEBIAN_DIR", directory if where == "debian" else isolated / "no-debian")
    if where == "env":
        monkeypatch.setenv(data.ENV_VAR, str(directory))
        _write_fake(data.cache_dir(), gz=False)  # a good fallback exists, and must not be used silently
    bad = directory / (STEMS[0] + ".gz")
    bad.write_bytes(
        {
            "garbage": b"\x00\x01garbage",
            "truncated-gzip": bad.read_bytes()[:100],
            "truncated-idx": gzip.compress(FAKE_IDX[STEMS[0]][:-28]),
            "other-data": gzip.compress(idx.write_idx(np.zeros((30, 28, 28), dtype=np.uint8))),
        }[damage]
    )
    with pytest.raises(ValueError, match=re.escape(str(bad))) as info:
        load_fashion_mnist(download=False)
    assert FAKE_HASHES[STEMS[0]] in str(info.value)


def test_no_source_without_download(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "MIRROR", OFFICIAL_MIRROR)
    with pytest.raises(DataNotFoundError) as info:
        locate_fashion_mnist(download=False)
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    for needle in (
        "DLTRICKS_DATA",
        "apt-get install dataset-fashion-mnist",
        OFFICIAL_MIRROR,
        "download=False",
    ):
        assert needle in message
    assert all(stem in message for stem in STEMS)


def test_no_source_and_mirror_unreachable(isolated: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(DataNotFoundError, match="download failed") as info:
        load_fashion_mnist()
    message = str(info.value)
    assert "DLTRICKS_DATA" in message and "dataset-fashion-mnist" in message and data.MIRROR in message
    assert data.main([]) == 1
    assert "DLTRICKS_DATA" in capsys.readouterr().err
    assert _cache_listing() == set()


def test_defaults_and_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert data.MIRROR == OFFICIAL_MIRROR and data.ENV_VAR == "DLTRICKS_DATA"
    assert len(data.CLASS_NAMES) == 10 and data.CLASS_NAMES[0] == "T-shirt/top"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert data.cache_dir() == tmp_path / "dltricks" / "fashion-mnist"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data.cache_dir() == tmp_path / "home" / ".cache" / "dltricks" / "fashion-mnist"
    with pytest.raises(TypeError, match=re.escape("Received: download='yes'")):
        locate_fashion_mnist(download="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=re.escape("Received: as_tensors=1")):
        load_fashion_mnist(as_tensors=1)  # type: ignore[arg-type]


# -------------------------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def real() -> data.FashionMNIST:
    try:
        return load_fashion_mnist(download=False)
    except DataNotFoundError:
        pytest.skip(
            "real Fashion-MNIST not found locally: set DLTRICKS_DATA or apt-get install dataset-fashion-mnist"
        )


def test_real_fashion_mnist(real: data.FashionMNIST) -> None:
    assert real.x_train.shape == (60000, 28, 28) and real.x_test.shape == (10000, 28, 28)
    assert real.x_train.dtype == np.uint8 and real.y_train.dtype == np.int64
    assert np.bincount(real.y_train).tolist() == [6000] * 10
    assert np.bincount(real.y_test).tolist() == [1000] * 10


def test_real_fashion_mnist_as_tensors(real: data.FashionMNIST) -> None:
    t = load_fashion_mnist(download=False, as_tensors=True)
    assert t.x_train.shape == (60000, 1, 28, 28) and t.x_test.shape == (10000, 1, 28, 28)
    assert t.x_train.dtype == torch.float32 and t.y_train.dtype == torch.int64
    assert 0.0 <= float(t.x_train.min()) and float(t.x_train.max()) == 1.0
    assert torch.equal(t.y_test, torch.from_numpy(real.y_test))


def test_module_main_reports_sources(real: data.FashionMNIST) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "dltricks.data", "--no-download"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert all(stem in done.stdout for stem in STEMS)


# ------------------------------------------------------------------------------------- splits and subsets
