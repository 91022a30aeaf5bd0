"""Stage evaluate@<arch>: the kept model on the test set, plus the run's facts, as metrics.

Usage: python -m stages.evaluate <arch>
"""

from __future__ import annotations


from stages.lib import paths
from stages.lib.atomic import write_json
from stages.lib.cli import StageError, arch_name, read_json, run
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
    trained = read_json(paths.train_json(name))
    metrics = {
        "failed": trained["failed"],
        "params": keras_model.count_params(model),
        "lr": trained["lr"],
        "lr_chosen_by": trained["lr_chosen_by"],
        "epochs_run": trained["epochs_run"],
        "best_epoch": trained["best_epoch"],
        "n_train": len(data["train"][0]),
        "n_test": len(data["test"][0]),
    }
    for part in ("val", "test"):
        # A failed run has no result: no accuracy is written rather than a meaningless one.
        scores = None if trained["failed"] else keras_model.evaluate(model, *data[part])
        for key in ("accuracy", "loss"):
            metrics[f"{part}_{key}"] = None if scores is None else round(scores[key], 6)
    write_json(paths.metrics_json(name), metrics)
    if trained["failed"]:
        print(f"evaluate@{name}: not evaluated, training failed: {trained['failed']}")
    else:
        print(f"evaluate@{name}: test accuracy {metrics['test_accuracy']:.4f}, loss {metrics['test_loss']:.4f}")


if __name__ == "__main__":
    run(main)
