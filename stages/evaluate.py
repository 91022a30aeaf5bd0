"""Stage evaluate@<arch>: every seed's kept model on the validation and test sets; the headline scores as metrics.

Scores with numpy straight from the .keras weights (stages/lib/mlp.py): no TensorFlow
start-up, and nothing in a model file is ever executed. Also writes the first seed's
confusion matrix and most confidently wrong test digits for the report, and its
prediction for every test image for DVC's confusion-matrix plot.

Usage: python -m stages.evaluate <arch>
"""

from __future__ import annotations

import numpy as np

from stages.ground.atomic import write_csv
from stages.ground.clock import Stopwatch, Took
from stages.lib import shapes
from stages.lib.data import load_prepared, part_size, scale
from stages.lib.mlp import Mlp, load_mlp
from stages.lib.scoring import confident_errors, confusion_matrix, scores, summarize
from stages.plumbing import machine, paths, records
from stages.plumbing.cli import arch_name, run
from stages.plumbing.params import load_params

CONFIDENT_ERRORS = 8  # per arch, shown in the report


class NotFinite(Exception):
    """A model whose outputs are NaN or infinite: it has no score, whatever argmax makes of them."""


def score_seed(model: Mlp, data: dict) -> tuple[dict[str, float], np.ndarray, Took]:
    """(val_/test_ accuracy and loss, the test outputs, the time of the test pass) of one model."""
    entry = {}
    for part in ("val", "test"):  # test last: its outputs and time are returned
        clock = Stopwatch()
        probs = model.predict(scale(data[part][0]))
        took = clock.took()
        if not np.isfinite(probs).all():
            raise NotFinite(f"the model's outputs on the {part} set are not finite (NaN or infinite weights)")
        for key, value in scores(probs, data[part][1]).items():
            entry[f"{part}_{key}"] = round(value, 6)
    return entry, probs, took


def inference_timing(passes: list[Took], images: int) -> dict:
    """The timing record of the test passes (none when the arch failed): their sum, and per 1,000 images."""
    seconds, cpu = sum(t.seconds for t in passes), sum(t.cpu_seconds for t in passes)
    loads = [t.other_cores_busy for t in passes]
    others = None if not passes or None in loads else sum(t.seconds * t.other_cores_busy for t in passes) / seconds
    per_thousand = len(passes) * images / 1000
    return {**Took(seconds, cpu, others).record(),
            "inference_ms_per_1000_images": round(1000 * seconds / per_thousand, 2) if passes else None,
            "inference_cpu_ms_per_1000_images": round(1000 * cpu / per_thousand, 2) if passes else None}


def unscored(trained: dict) -> dict[str, dict]:
    return {str(r["seed"]): {"epochs_run": r["epochs_run"], "best_epoch": r["best_epoch"]} for r in trained["runs"]}


def main(argv: list[str]) -> None:
    name = arch_name(argv, "evaluate")
    arch = load_params().arch(name)
    trained = records.read(paths.train_json(name), shapes.TRAIN)
    data = load_prepared(paths.PREPARED_DIR, parts=("val", "test"))  # the 55,000 training images are not needed
    n_train = part_size("train", paths.PREPARED_DIR)
    models = {r["seed"]: load_mlp(paths.model_file(name, r["seed"]), arch.layers) for r in trained["runs"]}
    first = next(iter(models.values()))
    failed, per_seed, passes, errors, predictions = trained["failed"], unscored(trained), [], None, []
    # A failed arch has no result: no accuracy is written rather than a meaningless one.
    if not failed:
        try:
            for seed, model in models.items():
                entry, probs, took = score_seed(model, data)
                per_seed[str(seed)] |= entry
                passes.append(took)
                if errors is None:
                    labels, predicted = data["test"][1], probs.argmax(axis=1)
                    errors = {"seed": seed,
                              "confusion": confusion_matrix(labels, predicted).tolist(),
                              "confident_errors": confident_errors(probs, labels, CONFIDENT_ERRORS)}
                    predictions = np.stack([labels, predicted], axis=1).tolist()
        except NotFinite as err:
            # NaN weights would score ~10 % (argmax of NaN is class 0). One such seed fails the arch, as a
            # failed training does: its other seeds' scores would be a mean over a biased subset.
            failed, per_seed, passes, errors, predictions = f"seed {seed}: {err}", unscored(trained), [], None, []
    evaluation = {
        "failed": failed,
        "params": first.count_params(),
        "size_bytes": paths.model_file(name, trained["runs"][0]["seed"]).stat().st_size,
        "lr": trained["lr"],
        "lr_chosen_by": trained["lr_chosen_by"],
        "n_train": n_train,
        "n_test": len(data["test"][1]),
        "repeats": len(models),
        **summarize(per_seed),
        "seeds": per_seed,
    }
    records.write_json(paths.evaluation_json(name), evaluation, shapes.EVALUATION)
    records.write_json(paths.metrics_json(name), {key: evaluation[key] for key in shapes.METRIC_KEYS}, shapes.METRICS)
    records.write_json(paths.errors_json(name), errors or {"seed": None, "confusion": None, "confident_errors": []},
                       shapes.ERRORS)
    write_csv(paths.predictions_csv(name), list(shapes.PREDICTIONS_COLUMNS), predictions)
    records.write_json(paths.timing_json(name, "evaluate"),
                       {**inference_timing(passes, len(data["test"][1])), "machine": machine.record()},
                       shapes.TIMINGS["evaluate"])
    if trained["failed"]:
        print(f"evaluate@{name}: not evaluated, training failed: {trained['failed']}")
    elif failed:
        print(f"evaluate@{name}: FAILED: {failed}")
    else:
        spread = "" if evaluation["test_accuracy_std"] is None else f" ± {evaluation['test_accuracy_std']:.4f}"
        print(f"evaluate@{name}: test accuracy {evaluation['test_accuracy']:.4f}{spread} over {len(models)} seed(s)")


if __name__ == "__main__":
    run(main)
