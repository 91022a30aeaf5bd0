"""The split and the prepared arrays every training stage reads."""

from __future__ import annotations

import math
import os
import tokenize
from pathlib import Path
from typing import NamedTuple

import numpy as np

from stages.ground.atomic import atomic_path
from stages.ground.errors import StageError
from stages.lib.idx import IDX_FILES, parse_idx
from stages.lib.schema import IMAGE_SHAPE, NUM_CLASSES

PARTS = ("train", "val", "test")
IMAGES_SHAPE = f"(n, {', '.join(map(str, IMAGE_SHAPE))})"  # of every images array, as messages say it


class Split(NamedTuple):
    x: np.ndarray  # uint8 images, IMAGES_SHAPE
    y: np.ndarray  # uint8 labels, (n,)


class DataError(StageError):
    """Missing or damaged data files; the message says how to restore them."""


def read_raw(raw_dir: Path) -> tuple[Split, Split]:
    """The original (train, test) sets from the four IDX files."""
    arrays = [parse_idx((raw_dir / name).read_bytes(), str(raw_dir / name)) for name in IDX_FILES]
    x_train, y_train, x_test, y_test = arrays
    for x, y, part in ((x_train, y_train, "train"), (x_test, y_test, "test")):
        if x.shape[1:] != IMAGE_SHAPE or y.ndim != 1:
            raise DataError(f"{raw_dir}: {part} images {x.shape} and labels {y.shape} are not {IMAGES_SHAPE} and (n,)")
        if len(x) != len(y):
            raise DataError(f"{raw_dir}: {part} has {len(x)} images but {len(y)} labels")
        if len(y) and y.max() >= NUM_CLASSES:
            raise DataError(f"{raw_dir}: {part} labels go up to {y.max()}, not digits 0 to {NUM_CLASSES - 1}")
    return Split(x_train, y_train), Split(x_test, y_test)


def split_train_val(train: Split, val_size: int) -> tuple[Split, Split]:
    """Validation = the first ``val_size`` training images, as in the reference study."""
    if not 0 < val_size < len(train.x):
        raise DataError(
            f"params.yaml: data.val_size: must leave training images (got {val_size}; "
            f"expected 1 to {len(train.x) - 1} for {len(train.x)} training images)"
        )
    return Split(train.x[val_size:], train.y[val_size:]), Split(train.x[:val_size], train.y[:val_size])


def save_prepared(parts: dict[str, Split], folder: Path) -> None:
    # .npy, not .npz: np.savez stamps the zip entries with the time, so the bytes
    # (and DVC's hash) would change on every run.
    for part, split in parts.items():
        for kind, array in (("x", split.x), ("y", split.y)):
            with atomic_path(folder / f"{kind}_{part}.npy") as tmp, open(tmp, "wb") as f:
                np.save(f, array, allow_pickle=False)


def load_split(part: str, folder: Path) -> Split:
    """One prepared part as stored: uint8 images and labels, checked."""
    x, y = (_load_npy(folder / f"{kind}_{part}.npy") for kind in ("x", "y"))
    if x.shape[1:] != IMAGE_SHAPE or x.dtype != np.uint8 or y.shape != (len(x),):
        raise DataError(
            f"{folder}/x_{part}.npy, y_{part}.npy: shapes {x.shape} and {y.shape}, dtype {x.dtype}; expected "
            f"{IMAGES_SHAPE} uint8 images and (n,) labels: {_RESTORE}"
        )
    if len(y) and not 0 <= y.min() <= y.max() < NUM_CLASSES:
        raise DataError(f"{folder}/y_{part}.npy: labels from {y.min()} to {y.max()}, "
                        f"not digits 0 to {NUM_CLASSES - 1}: {_RESTORE}")
    return Split(x, y)


def part_size(part: str, folder: Path) -> int:
    """Number of labels in a prepared part, without reading its images."""
    return len(_load_npy(folder / f"y_{part}.npy"))


def load_prepared(folder: Path, parts: tuple[str, ...] = PARTS) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The requested parts as (uint8 images, int32 labels); a stage loads only what it uses.

    Images stay uint8 (a quarter of float32's memory) until a batch is used: see ``scale``.
    """
    out = {}
    for part in parts:
        x, y = load_split(part, folder)
        out[part] = (x, y.astype(np.int32))
    return out


def scale(images: np.ndarray) -> np.ndarray:
    """Pixels as the models see them: float32 in [0, 1]. keras_model.batches does the same per batch."""
    return images.astype(np.float32) / np.float32(255)


_RESTORE = "restore with `dvc checkout data/prepared` or rebuild with `dvc repro -f split`"


NPY_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def _load_npy(path: Path) -> np.ndarray:
    """The array in a .npy file, once its header is known good: numpy would allocate whatever shape a
    damaged header declares, and some damage makes its header parser raise errors of every kind."""
    try:
        with open(path, "rb") as f:
            if f.read(6) != b"\x93NUMPY":  # e.g. a git-lfs pointer or a half-copied file
                raise DataError(f"{path}: not a .npy file: {_RESTORE}")
            f.seek(0)
            version = np.lib.format.read_magic(f)
            if version not in NPY_HEADER_READERS:
                raise DataError(f"{path}: .npy format version {version} is not one np.save writes here: {_RESTORE}")
            shape, _, dtype = NPY_HEADER_READERS[version](f)
            data_bytes = os.fstat(f.fileno()).st_size - f.tell()
            declared = math.prod(shape) * dtype.itemsize
            if dtype.hasobject or declared != data_bytes:
                raise DataError(f"{path}: its header declares a {dtype} array of shape {shape} ({declared:,} bytes) "
                                f"but {data_bytes:,} bytes follow: {_RESTORE}")
            f.seek(0)
            return np.load(f, allow_pickle=False)
    except PermissionError:
        raise  # not damage, and no checkout fixes it: cli.run says what does
    except (OSError, ValueError, EOFError, SyntaxError, TypeError, tokenize.TokenError) as err:
        raise DataError(f"{path}: cannot be read ({type(err).__name__}: {err}): {_RESTORE}") from None
