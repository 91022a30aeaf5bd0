"""The IDX format of the original MNIST files (big-endian header, then raw data)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

UBYTE = 0x08  # the only element type MNIST uses
IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


class IdxError(ValueError):
    pass


def parse_idx(data: bytes, name: str = "IDX data") -> np.ndarray:
    """Decode an unsigned-byte IDX file into an array of its declared shape."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise IdxError(f"{name}: not an IDX file (bad magic number)")
    if data[2] != UBYTE:
        raise IdxError(f"{name}: element type 0x{data[2]:02x} is not unsigned byte (0x08)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise IdxError(f"{name}: truncated header")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape))
    if len(data) != expected:
        raise IdxError(f"{name}: {len(data)} bytes, but its header {shape} needs {expected}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def encode_idx(array: np.ndarray) -> bytes:
    """Inverse of parse_idx for uint8 arrays."""
    if array.dtype != np.uint8:
        raise IdxError(f"only uint8 arrays are IDX-encoded here, got {array.dtype}")
    header = bytes([0, 0, UBYTE, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + np.ascontiguousarray(array).tobytes()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
