"""Stage evaluate@<arch>: the kept model on the test set, plus the run's facts, as metrics.

Usage: python -m stages.evaluate <arch>
"""

from __future__ import annotations

import json

from stages.lib import paths
from stages.lib.atomic import write_json
from stages.lib.cli import StageError, arch_name, run
from stages.lib.data import DataError, load_prepared
from stages.lib.params import load_params

def main(argv: list[str]) -> None:
    name = arch_name(argv, "evaluate")
    params = load_params()
    params.arch(name)
    from stages.lib import keras_model  # TensorFlow only once params are known good

    try:
        data = load_prepared()
        model = keras_model.load_model(paths.model_file(name))
    except (DataError, keras_model.ModelFileError) as err:
        raise StageError(str(err)) from None
    scores = {part: keras_model.evaluate(model, *data[part]) for part in ("val", "test")}
    trained = json.loads(paths.train_json(name).read_text())
    swept = json.loads(paths.lr_range_json(name).read_text())
    metrics = {
        "test_accuracy": round(float(scores["test"]["accuracy"]), 6),
        "test_loss": round(float(scores["test"]["loss"]), 6),
        "val_accuracy": round(float(scores["val"]["accuracy"]), 6),
        "val_loss": round(float(scores["val"]["loss"]), 6),
        "params": keras_model.count_params(model),
        "lr": trained["lr"],
        "lr_chosen_by": trained["lr_chosen_by"],
        "epochs_run": trained["epochs_run"],
        "best_epoch": trained["best_epoch"],
        "lr_range_seconds": swept["seconds"],
        "train_seconds": trained["seconds"],
        "n_train": len(data["train"][0]),
        "n_test": len(data["test"][0]),
    }
    write_json(paths.metrics_json(name), metrics)
    print(f"evaluate@{name}: test accuracy {metrics['test_accuracy']:.4f}, loss {metrics['test_loss']:.4f}")


if __name__ == "__main__":
    run(main)
