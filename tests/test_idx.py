"""IDX encode/parse and the sha256 helpers."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from stages.lib.idx import IdxError, encode_idx, parse_idx, sha256_bytes, sha256_file


@pytest.mark.parametrize(
    "array",
    [
        np.arange(2 * 28 * 28, dtype=np.uint64).reshape(2, 28, 28).astype(np.uint8),  # images
        np.array([3, 1, 4, 1, 5, 9, 2, 6], dtype=np.uint8),  # labels
        np.zeros((0, 28, 28), dtype=np.uint8),  # empty set of images
    ],
    ids=["images-3d", "labels-1d", "empty-images"],
)
def test_roundtrip_keeps_shape_and_values(array):
    decoded = parse_idx(encode_idx(array))
    assert decoded.dtype == np.uint8
    assert decoded.shape == array.shape
    np.testing.assert_array_equal(decoded, array)


def test_roundtrip_of_non_contiguous_arrays_is_in_c_order():
    base = np.arange(60, dtype=np.uint8).reshape(3, 4, 5)
    for array in (np.asfortranarray(base), base[:, ::2, :], base.transpose(0, 2, 1)):
        np.testing.assert_array_equal(parse_idx(encode_idx(array)), array)


def test_exact_bytes_of_a_small_2d_array():
    array = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.uint8)
    expected = (
        b"\x00\x00\x08\x02"  # magic: two zero bytes, type 0x08 (ubyte), 2 dimensions
        b"\x00\x00\x00\x02"  # dim 0 = 2, big-endian
        b"\x00\x00\x00\x03"  # dim 1 = 3
        b"\x01\x02\x03\x04\x05\x06"
    )
    assert encode_idx(array) == expected


def test_exact_bytes_of_labels_with_a_multi_byte_dimension():
    labels = np.full(258, 7, dtype=np.uint8)  # 258 = 0x0102 exercises byte order
    data = encode_idx(labels)
    assert data[:8] == b"\x00\x00\x08\x01\x00\x00\x01\x02"
    assert data[8:] == b"\x07" * 258


def test_parse_known_bytes():
    data = b"\x00\x00\x08\x03" + b"\x00\x00\x00\x01" + b"\x00\x00\x00\x02" + b"\x00\x00\x00\x02" + b"\x0a\x0b\x0c\x0d"
    np.testing.assert_array_equal(parse_idx(data), np.array([[[10, 11], [12, 13]]], dtype=np.uint8))


@pytest.mark.parametrize("data", [b"\x01\x00\x08\x01\x00\x00\x00\x01\x05",
                                  b"\x00\x01\x08\x01\x00\x00\x00\x01\x05", b"\x00\x00", b""])
def test_bad_magic(data):
    with pytest.raises(IdxError, match="bad magic"):
        parse_idx(data, "some-file")


def test_error_names_the_file():
    with pytest.raises(IdxError, match="^train-images-idx3-ubyte: "):
        parse_idx(b"PK\x03\x04", "train-images-idx3-ubyte")


@pytest.mark.parametrize("type_byte", [0x09, 0x0B, 0x0C, 0x0D, 0x0E])
def test_non_ubyte_element_type(type_byte):
    data = bytes([0, 0, type_byte, 1]) + b"\x00\x00\x00\x02" + b"\x00\x00"
    with pytest.raises(IdxError, match=f"0x{type_byte:02x} is not unsigned byte"):
        parse_idx(data)


def test_truncated_header():
    with pytest.raises(IdxError, match="truncated header"):
        parse_idx(b"\x00\x00\x08\x03\x00\x00\x00\x01\x00\x00")  # 3 dims declared, 1.5 given


def test_zero_dimensions_is_rejected():
    with pytest.raises(IdxError, match="truncated header"):
        parse_idx(b"\x00\x00\x08\x00")


def test_truncated_data():
    data = encode_idx(np.ones((2, 3, 3), dtype=np.uint8))
    with pytest.raises(IdxError, match=r"33 bytes, but its header \(2, 3, 3\) needs 34"):
        parse_idx(data[:-1], "x")


def test_trailing_bytes_are_rejected():
    data = encode_idx(np.ones(5, dtype=np.uint8))
    with pytest.raises(IdxError, match=r"14 bytes, but its header \(5,\) needs 13"):
        parse_idx(data + b"\x00")


@pytest.mark.parametrize("dtype", [np.int8, np.uint16, np.float32, np.int64])
def test_encode_refuses_other_dtypes(dtype):
    with pytest.raises(IdxError, match="only uint8"):
        encode_idx(np.zeros(3, dtype=dtype))


def test_sha256_of_known_bytes():
    assert sha256_bytes(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert sha256_bytes(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_sha256_file_matches_bytes(tmp_path):
    small = tmp_path / "abc"
    small.write_bytes(b"abc")
    assert sha256_file(small) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    big = tmp_path / "big"  # more than one 1 MiB read block
    data = bytes(range(256)) * (5 * 4096 + 3)
    big.write_bytes(data)
    assert sha256_file(big) == hashlib.sha256(data).hexdigest()
