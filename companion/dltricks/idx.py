"""Read and write the IDX file format used by MNIST and Fashion-MNIST.

An IDX file is a 4-byte magic number followed by the dimensions and the raw data::

    0x00 0x00 <dtype code> <number of dims>   magic
    <dim 0> ... <dim n-1>                      one big-endian uint32 each
    <data>                                     C order, big-endian items

The distributed files are usually gzip-compressed; :func:`decompress` undoes that and leaves plain
bytes alone, so callers can treat both the same way.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib

import numpy as np

from dltricks._checks import check_type

__all__ = ["GZIP_MAGIC", "IDX_DTYPES", "decompress", "read_idx", "write_idx"]

GZIP_MAGIC = b"\x1f\x8b"

# The type codes of the IDX specification. Multi-byte items are big-endian on disk, whatever the host.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
# Reverse lookup keyed on the byte-order-free kind and size, so a little-endian int32 maps to 0x0C too.
_CODES: dict[tuple[str, int], int] = {(dt.kind, dt.itemsize): code for code, dt in IDX_DTYPES.items()}
_BYTES_LIKE = (bytes, bytearray, memoryview)


def _describe(data: bytes | bytearray | memoryview) -> str:
    """Summarize a byte string for an error message: its length and first bytes, never the whole payload."""
    head = bytes(data[:8])
    return f"<{len(data)} bytes starting with {head!r}>"


def _bad_data(expected: str, data: bytes | bytearray | memoryview) -> ValueError:
    return ValueError(f"`data` must be {expected}. Received: data={_describe(data)}")


def decompress(raw: bytes) -> bytes:
    """Un-gzip ``raw`` if it starts with the gzip magic, otherwise return it unchanged.

    Args:
        raw: File contents, gzip-compressed or not.

    Returns:
        The decompressed bytes (or ``raw`` itself, as ``bytes``, when it is not gzip data).

    Raises:
        TypeError: If ``raw`` is not bytes-like.
        ValueError: If ``raw`` looks like gzip but the stream is truncated or corrupt.
    """
    check_type("raw", raw, _BYTES_LIKE, "bytes-like")
    raw = bytes(raw)
    if not raw.startswith(GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        # A truncated download ends in EOFError, a flipped byte in a CRC or zlib error: one message for all.
        raise ValueError(
            f"`raw` must be a complete, valid gzip stream. Received: raw={_describe(raw)} ({exc})"
        ) from exc


def read_idx(data: bytes) -> np.ndarray:
    """Parse the bytes of an (uncompressed) IDX file into an array.

    Args:
        data: The IDX bytes; pass gzip-compressed files through :func:`decompress` first.

    Returns:
        A new, writable array with the shape stored in the header and the native-byte-order version of the
        stored dtype (``uint8`` for the MNIST-family files).

    Raises:
        TypeError: If ``data`` is not bytes-like.
        ValueError: If the magic is wrong, the dtype code is unknown, the header is cut short, or the payload
            is shorter or longer than the product of the dimensions requires.
    """
    check_type("data", data, _BYTES_LIKE, "bytes-like")
    data = bytes(data)
    if len(data) < 4:
        raise _bad_data("at least 4 bytes long (the IDX magic)", data)
    if data[:2] != b"\x00\x00":
        hint = " (gzip data: call decompress() first)" if data.startswith(GZIP_MAGIC) else ""
        raise _bad_data(f"IDX bytes starting with two zero bytes{hint}", data)
    code, ndim = data[2], data[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise _bad_data(f"IDX bytes with a dtype code in {{{known}}}, not 0x{code:02X}", data)
    header = 4 + 4 * ndim
    if len(data) < header:
        raise _bad_data(f"at least {header} bytes long (a header with {ndim} dimensions)", data)
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = IDX_DTYPES[code]
    expected = math.prod(shape) * dtype.itemsize
    found = len(data) - header
    if found != expected:
        problem = "truncated" if found < expected else "oversized"
        raise _bad_data(
            f"an IDX payload of {expected} bytes for shape {shape} and dtype {dtype.name} "
            f"({problem}: found {found} bytes after the header)",
            data,
        )
    array = np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=header).reshape(shape)
    # astype copies, which both converts to native byte order and detaches from the read-only buffer.
    return array.astype(dtype.newbyteorder("="))


def write_idx(array: np.ndarray, *, compress: bool = False) -> bytes:
    """Serialize an array to IDX bytes.

    Args:
        array: An array of dtype uint8, int8, int16, int32, float32 or float64 with at most 255 dimensions,
            each smaller than 2**32.
        compress: Gzip the result, as the distributed MNIST-family files are.

    Returns:
        The IDX file contents.

    Raises:
        TypeError: If ``array`` is not a numpy array or ``compress`` is not a bool.
        ValueError: If the dtype has no IDX code or the shape does not fit the header.
    """
    check_type("array", array, np.ndarray, "a numpy array")
    check_type("compress", compress, bool, "a bool")
    code = _CODES.get((array.dtype.kind, array.dtype.itemsize))
    if code is None:
        raise ValueError(
            "`array` must have dtype uint8, int8, int16, int32, float32 or float64. "
            f"Received: array.dtype={array.dtype}"
        )
    if array.ndim > 255:
        raise ValueError(f"`array` must have at most 255 dimensions. Received: array.ndim={array.ndim}")
    if any(d >= 2**32 for d in array.shape):
        raise ValueError(f"`array` must have every dimension < 2**32. Received: array.shape={array.shape}")
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()
    out = header + payload
    # mtime=0 makes the compressed bytes reproducible, so their hashes are stable across runs.
    return gzip.compress(out, mtime=0) if compress else out
