"""Opt-in study: how close to the best fixed rate does each rule's pick get?

Trains every arch (fresh, same seed, same training as the train stage) at each
rate of ``lr_study.grid`` and at every rule's pick from reports/lr_range/, and
writes the test accuracies to reports/lr_study.json, which the report shows.
Too slow for every `dvc repro` (one training per arch and rate), so it runs on
demand: `make lr-study`, after the pipeline has run.
"""

from __future__ import annotations

import time

from stages.lib import machine, paths, records
from stages.lib.atomic import write_json
from stages.lib.cli import run
from stages.lib.data import load_prepared
from stages.lib.errors import StageError
from stages.lib.params import load_params
from stages.lib.report import study_settings
from stages.lib.tf_runtime import load_keras_model

USAGE = "usage: python -m scripts.lr_study"


def main(argv: list[str]) -> None:
    if argv:
        raise StageError(f"{USAGE}: no arguments (got {' '.join(argv)})")
    params = load_params()
    keras_model = load_keras_model(params.compute)  # TensorFlow only once params are known good

    data = load_prepared()
    archs = {}
    for name, arch in params.archs.items():
        picks = records.read(paths.lr_range_json(name), {"picks": records.MapOf(records.PICK)})["picks"]
        rates = sorted(set(params.lr_study.grid) | {p["lr"] for p in picks.values() if "lr" in p})
        runs = []
        for lr in rates:
            started = time.perf_counter()
            model = keras_model.build_model(arch, params.seed)
            run = keras_model.train(model, lr, data, params.train, params.seed, params.compute)
            if run.failure:
                runs.append({"lr": lr, "failed": run.failure})
                print(f"lr_study: {name} at lr {lr:.4g}: failed: {run.failure}", flush=True)
                continue
            test = keras_model.evaluate(model, *data["test"])
            runs.append({"lr": lr, "test_accuracy": round(test["accuracy"], 6), "test_loss": round(test["loss"], 6)})
            print(f"lr_study: {name} at lr {lr:.4g}: test accuracy {test['accuracy']:.4f} "
                  f"({time.perf_counter() - started:.1f} s)", flush=True)
        archs[name] = {"hidden": list(arch.hidden), "activation": arch.activation, "picks": picks, "runs": runs}
    write_json(paths.LR_STUDY_JSON, {"settings": study_settings(params), "grid": list(params.lr_study.grid),
                                     "archs": archs,
                                     "machine": machine.record(params.compute.numerics, params.compute.threads)})
    print(f"lr_study: wrote {paths.LR_STUDY_JSON}")


if __name__ == "__main__":
    run(main, usage=USAGE)
