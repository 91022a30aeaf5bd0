"""Stage split: data/raw/ -> data/prepared/ train, val and test arrays (uint8, byte-reproducible)."""

from __future__ import annotations

from stages.lib.atomic import atomic_dir
from stages.lib.cli import run
from stages.lib.data import DataError, read_raw, save_prepared, split_train_val
from stages.lib.errors import StageError
from stages.lib.idx import IdxError
from stages.lib.params import load_params
from stages.lib.paths import PREPARED_DIR, RAW_DIR
from stages.lib.schema import ParamsError
from stages.lib.sources import SourceError, verify


def main(argv: list[str]) -> None:
    params = load_params()
    try:
        verify(RAW_DIR, params.data.sha256)  # as download did: data/raw may have changed since, outside DVC
    except SourceError as err:
        raise StageError(f"{RAW_DIR}: {err}: restore it with `dvc checkout data/raw` "
                         "or `dvc repro -f download`") from None
    try:
        full_train, test = read_raw()
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
