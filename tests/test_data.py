"""The split and the prepared arrays."""

from __future__ import annotations

import numpy as np
import pytest
from harness import HEADER_DAMAGE, IMAGES, npy_with_header

from stages.lib.data import (
    PARTS,
    DataError,
    Split,
    load_prepared,
    load_split,
    part_size,
    read_raw,
    save_prepared,
    scale,
    split_train_val,
)
from stages.lib.idx import IDX_FILES, IdxError, encode_idx

FILES = sorted(f"{kind}_{part}.npy" for part in PARTS for kind in ("x", "y"))


def numbered(n: int) -> Split:
    """Image i is filled with i, label i is i % 10: every row says where it came from."""
    x = np.repeat(np.arange(n, dtype=np.uint8)[:, None, None], 28 * 28, axis=1).reshape(n, 28, 28)
    return Split(x, (np.arange(n) % 10).astype(np.uint8))


@pytest.fixture
def parts() -> dict[str, Split]:
    train, val = split_train_val(numbered(50), 12)
    test = numbered(20)
    return {"train": train, "val": val, "test": test}


# --- split ------------------------------------------------------------------------------------


def test_validation_is_the_first_val_size_images():
    full = numbered(50)
    train, val = split_train_val(full, 12)
    assert val.x.shape == (12, 28, 28) and train.x.shape == (38, 28, 28)
    np.testing.assert_array_equal(val.x[:, 0, 0], np.arange(12))
    np.testing.assert_array_equal(train.x[:, 0, 0], np.arange(12, 50))
    np.testing.assert_array_equal(val.y, np.arange(12) % 10)
    np.testing.assert_array_equal(train.y, np.arange(12, 50) % 10)


@pytest.mark.parametrize("val_size", [1, 49])
def test_extreme_but_valid_val_sizes(val_size):
    train, val = split_train_val(numbered(50), val_size)
    assert (len(train.x), len(val.x)) == (50 - val_size, val_size)


@pytest.mark.parametrize("val_size", [0, -1, 50, 51, 60000])
def test_bad_val_size(val_size):
    with pytest.raises(DataError) as info:
        split_train_val(numbered(50), val_size)
    message = str(info.value)
    assert "data.val_size" in message
    assert f"got {val_size}" in message
    assert "expected 1 to 49 for 50 training images" in message


# --- save / load ------------------------------------------------------------------------------


def test_save_prepared_is_byte_reproducible(tmp_path, parts):
    save_prepared(parts, tmp_path / "a")
    save_prepared(parts, tmp_path / "b")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == FILES
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == FILES
    for name in FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_saved_files_are_plain_npy_with_the_original_dtype(tmp_path, parts):
    save_prepared(parts, tmp_path)
    x = np.load(tmp_path / "x_val.npy", allow_pickle=False)
    assert x.dtype == np.uint8
    np.testing.assert_array_equal(x, parts["val"].x)


def test_load_prepared_keeps_uint8_images_and_casts_labels(tmp_path, parts):
    save_prepared(parts, tmp_path)
    loaded = load_prepared(tmp_path)
    assert set(loaded) == set(PARTS)
    for part in PARTS:
        x, y = loaded[part]
        assert x.dtype == np.uint8 and y.dtype == np.int32
        np.testing.assert_array_equal(x, parts[part].x)
        np.testing.assert_array_equal(y, parts[part].y)


def test_scale_maps_pixels_to_float32_in_zero_one():
    x = np.array([[0, 1, 128, 255]], dtype=np.uint8)
    scaled = scale(x)
    assert scaled.dtype == np.float32
    np.testing.assert_array_equal(scaled, np.array([[0, 1, 128, 255]], dtype=np.float32) / np.float32(255))
    assert scaled.max() == 1.0


def test_a_stage_loads_only_the_parts_it_asks_for(tmp_path, parts):
    save_prepared(parts, tmp_path)
    (tmp_path / "x_train.npy").unlink()  # evaluate never needs it
    loaded = load_prepared(tmp_path, parts=("val", "test"))
    assert list(loaded) == ["val", "test"]
    assert part_size("train", tmp_path) == 38


def test_load_split_keeps_the_stored_uint8_images(tmp_path, parts):
    save_prepared(parts, tmp_path)
    x, y = load_split("test", tmp_path)
    assert x.dtype == np.uint8
    np.testing.assert_array_equal(x, parts["test"].x)
    np.testing.assert_array_equal(y, parts["test"].y)


@pytest.mark.parametrize("broken", ["x_train.npy", "y_test.npy"])
def test_missing_file_is_a_clear_data_error(tmp_path, parts, broken):
    save_prepared(parts, tmp_path)
    (tmp_path / broken).unlink()
    with pytest.raises(DataError) as info:
        load_prepared(tmp_path)
    message = str(info.value)
    assert "`dvc checkout data/prepared`" in message and "`dvc repro -f split`" in message
    assert f"{broken}: cannot be read" in message


@pytest.mark.parametrize(
    "corrupt",
    [lambda data: b"garbage " * 20, lambda data: data[: len(data) // 2], lambda data: data[:20]],
    ids=["garbage", "truncated-data", "truncated-header"],
)
def test_corrupted_file_is_a_clear_data_error(tmp_path, parts, corrupt):
    save_prepared(parts, tmp_path)
    path = tmp_path / "x_val.npy"
    path.write_bytes(corrupt(path.read_bytes()))
    with pytest.raises(DataError, match=r"x_val\.npy: .*`dvc checkout data/prepared`"):
        load_prepared(tmp_path)


def test_empty_file_is_a_clear_data_error(tmp_path, parts):
    save_prepared(parts, tmp_path)
    (tmp_path / "y_val.npy").write_bytes(b"")
    with pytest.raises(DataError, match="`dvc checkout data/prepared`"):
        load_prepared(tmp_path)


@pytest.mark.parametrize(
    "x, y",
    [
        (np.zeros((4, 784), np.uint8), np.zeros(4, np.uint8)),  # flattened images
        (np.zeros((4, 28, 28), np.float32), np.zeros(4, np.uint8)),  # already scaled
        (np.zeros((4, 28, 28), np.uint8), np.zeros(3, np.uint8)),  # labels missing
        (np.zeros((4, 28, 28), np.uint8), np.zeros((4, 1), np.uint8)),  # labels 2-D
    ],
    ids=["x-2d", "x-float", "y-short", "y-2d"],
)
def test_wrong_shapes_are_a_clear_data_error(tmp_path, parts, x, y):
    save_prepared(parts, tmp_path)
    np.save(tmp_path / "x_test.npy", x)
    np.save(tmp_path / "y_test.npy", y)
    with pytest.raises(DataError) as info:
        load_prepared(tmp_path)
    message = str(info.value)
    assert "x_test.npy, y_test.npy: shapes" in message
    assert "`dvc repro -f split`" in message


def test_the_header_helper_makes_a_loadable_file(tmp_path, parts):
    """Control for the damaged headers below."""
    save_prepared(parts, tmp_path)
    (tmp_path / "x_test.npy").write_bytes(npy_with_header(
        "{'descr': '|u1', 'fortran_order': False, 'shape': (4, 28, 28), }", IMAGES))
    np.save(tmp_path / "y_test.npy", np.zeros(4, np.uint8))
    assert load_split("test", tmp_path).x.shape == (4, 28, 28)


@pytest.mark.parametrize("damage", HEADER_DAMAGE)
def test_a_damaged_npy_header_is_a_clear_data_error_before_any_allocation(tmp_path, parts, damage):
    save_prepared(parts, tmp_path)
    (tmp_path / "x_test.npy").write_bytes(HEADER_DAMAGE[damage])
    with pytest.raises(DataError) as info:
        load_split("test", tmp_path)
    message = str(info.value)
    assert message.startswith(f"{tmp_path}/x_test.npy: "), message
    assert message.endswith("restore with `dvc checkout data/prepared` or rebuild with `dvc repro -f split`")
    assert "\n" not in message


# --- raw --------------------------------------------------------------------------------------


def test_read_raw(idx_folder, tiny_arrays):
    folder, _ = idx_folder
    train, test = read_raw(folder)
    np.testing.assert_array_equal(train.x, tiny_arrays["x_train"])
    np.testing.assert_array_equal(train.y, tiny_arrays["y_train"])
    np.testing.assert_array_equal(test.x, tiny_arrays["x_test"])
    np.testing.assert_array_equal(test.y, tiny_arrays["y_test"])
    assert train.x.shape == (300, 28, 28) and test.y.shape == (100,)


def test_read_raw_label_count_mismatch(idx_folder, tiny_arrays):
    folder, _ = idx_folder
    (folder / "t10k-labels-idx1-ubyte").write_bytes(encode_idx(tiny_arrays["y_test"][:-1]))
    with pytest.raises(DataError, match="test has 100 images but 99 labels"):
        read_raw(folder)


def test_read_raw_bad_idx_names_the_file(idx_folder):
    folder, _ = idx_folder
    path = folder / IDX_FILES[0]
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(IdxError, match="train-images-idx3-ubyte"):
        read_raw(folder)


def test_read_raw_then_split_then_save_and_load(tmp_path, idx_folder, tiny_arrays):
    folder, _ = idx_folder
    train, test = read_raw(folder)
    train, val = split_train_val(train, 50)
    save_prepared({"train": train, "val": val, "test": test}, tmp_path / "prepared")
    loaded = load_prepared(tmp_path / "prepared")
    assert [len(loaded[p][0]) for p in PARTS] == [250, 50, 100]
    np.testing.assert_array_equal(loaded["val"][1], tiny_arrays["y_train"][:50])


@pytest.mark.parametrize("labels", [[0, 10, 3, 2], [0, 255, 3, 2]])
def test_labels_that_are_not_digits_are_a_clear_data_error(tmp_path, parts, labels):
    """A label of 10 or more would crash the confusion matrix (IndexError) or the training loss."""
    save_prepared(parts, tmp_path)
    np.save(tmp_path / "x_test.npy", np.zeros((4, 28, 28), np.uint8))
    np.save(tmp_path / "y_test.npy", np.array(labels, np.uint8))
    with pytest.raises(DataError, match=rf"y_test\.npy: labels from 0 to {max(labels)}, not digits 0 to 9: restore"):
        load_prepared(tmp_path)


@pytest.mark.parametrize("x, y, message", [
    (np.zeros((5, 784), np.uint8), np.zeros(5, np.uint8), r"train images \(5, 784\) and labels \(5,\) are not"),
    (np.zeros((5, 28, 28), np.uint8), np.full(5, 10, np.uint8), "train labels go up to 10, not digits 0 to 9"),
], ids=["flat-images", "label-10"])
def test_raw_arrays_that_are_not_mnist_are_a_clear_data_error(idx_folder, x, y, message):
    folder, _ = idx_folder
    (folder / IDX_FILES[0]).write_bytes(encode_idx(x))
    (folder / IDX_FILES[1]).write_bytes(encode_idx(y))
    with pytest.raises(DataError, match=message):
        read_raw(folder)
