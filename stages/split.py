"""Stage split: data/raw/ -> data/prepared/ train, val and test arrays (uint8, byte-reproducible)."""

from __future__ import annotations

from stages.ground.atomic import atomic_dir
from stages.ground.errors import StageError
from stages.lib.data import DataError, read_raw, save_prepared, split_train_val
from stages.lib.idx import IdxError, sha256_file
from stages.lib.schema import ParamsError
from stages.plumbing.cli import run
from stages.plumbing.params import load_params
from stages.plumbing.paths import PREPARED_DIR, RAW_DIR


def check_raw_sums(expected: dict[str, str]) -> None:
    """data/raw as download verified it: it may have changed since, outside DVC (a missing file is read_raw's)."""
    for name, digest in expected.items():
        path = RAW_DIR / name
        if path.is_file() and sha256_file(path) != digest:
            raise StageError(f"{path}: its sha256 is not data.sha256's ({digest[:12]}…): restore it with "
                             "`dvc checkout data/raw` or `dvc repro -f download`")


def main(argv: list[str]) -> None:
    params = load_params()
    check_raw_sums(params.data.sha256)
    try:
        full_train, test = read_raw(RAW_DIR)
    except (DataError, IdxError, OSError) as err:
        raise StageError(f"{err}\n(restore data/raw with `dvc checkout data/raw` or `dvc repro -f download`)") from None
    try:
        train, val = split_train_val(full_train, params.data.val_size)
    except DataError as err:  # a val_size the data cannot satisfy is a params problem
        raise ParamsError([str(err)]) from None
    with atomic_dir(PREPARED_DIR) as staged:
        save_prepared({"train": train, "val": val, "test": test}, staged)
    print(f"split: train {len(train.x)}, val {len(val.x)}, test {len(test.x)} -> {PREPARED_DIR}/")


if __name__ == "__main__":
    run(main)
