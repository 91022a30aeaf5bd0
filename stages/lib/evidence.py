"""What the evidence stages train, and the record each run leaves: pure functions, no TensorFlow.

A run's record holds its validation and test scores, computed in float64 from the trained weights
(stages.lib.mlp, as evaluate does), so they are the same on any CPU. Choices are made on validation;
test is recorded so the report can give it for what was chosen.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

from stages.ground.errors import StageError
from stages.lib.data import scale
from stages.lib.mlp import Mlp
from stages.lib.schema import GRID_NEIGHBOURHOOD, TrainParams
from stages.lib.scoring import confusion_matrix, scores
from stages.lib.shapes import RUN_HISTORY_KEYS

SCORE_DIGITS = 6


def pack_bits(flags: np.ndarray) -> str:
    """A boolean per image as base64 text (10,000 test images: 1,668 characters)."""
    return base64.b64encode(np.packbits(flags.astype(bool)).tobytes()).decode("ascii")


def unpack_bits(text: str, count: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(base64.b64decode(text), dtype=np.uint8))[:count].astype(bool)


def run_record(lr: float, rows: list[dict], best_epoch: int | None, failure: str | None, model: Mlp | None,
               data: dict, detail: bool = False) -> dict[str, Any]:
    """One training run: its rate, epochs, per-epoch history, and the kept model's scores.

    Args:
        rows: Keras' logs, one per epoch run (RUN_HISTORY_KEYS among them).
        best_epoch: the kept epoch (0-based, what early stopping restored); None when none was kept.
        failure: why training stopped short (keras_model.train's failure), else None.
        model: the kept weights as an Mlp; None when they are not finite: such a run has no scores.
        data: part (val, test) -> (images, labels), as data.load_prepared returns them.
        detail: also record, for the test set, which images the model gets right (for comparisons paired over
            images) and the confusion matrix (for per-class accuracy).
    """
    record: dict[str, Any] = {
        "lr": lr,
        "epochs_run": len(rows),
        "best_epoch": best_epoch,
        "failed": failure,
        "history": [{key: round(float(row[key]), SCORE_DIGITS) if np.isfinite(row[key]) else None
                     for key in RUN_HISTORY_KEYS} for row in rows],
    }
    if model is None:
        return record
    for part in ("val", "test"):
        x, y = data[part]
        probs = model.predict(scale(x))
        if not np.all(np.isfinite(probs)):
            return record
        for key, value in scores(probs, y).items():
            record[f"{part}_{key}"] = round(value, SCORE_DIGITS)
        if detail and part == "test":
            predicted = probs.argmax(axis=1)
            record["test_correct"] = pack_bits(predicted == y)
            record["confusion"] = confusion_matrix(y, predicted).tolist()
    return record


def distinct_picks(range_records: list[dict]) -> list[float]:
    """Every rate any rule picked in any of an arch's range tests, once each, in increasing order."""
    return sorted({pick["lr"] for record in range_records for pick in record["picks"].values() if "lr" in pick})


def grid_best(grid: tuple[float, ...], grid_records: list[dict]) -> int:
    """Index in ``grid`` of the rate with the highest mean validation accuracy over the seeds' records
    (a run without scores counts as chance, 1 in 10)."""
    means = [np.mean([val_accuracy(record_at(r, lr)) for r in grid_records]) for lr in grid]
    return int(np.argmax(means))


def record_at(unit: dict, lr: float) -> dict:
    """The run at rate ``lr`` in a grid or picks record."""
    for run in unit["runs"]:
        if run["lr"] == lr:
            return run
    raise StageError(f"no run at rate {lr:g} in the {unit['kind']} record of {unit['arch']} seed {unit['seed']}: "
                     "rebuild it with `dvc repro evidence/dvc.yaml`")


CHANCE = 0.1  # what a run that diverged scores: a guess among 10 digits


def val_accuracy(run: dict) -> float:
    return run.get("val_accuracy", CHANCE)


def rate_for(source: str, quick_picks: dict, grid: tuple[float, ...], best: int) -> float:
    """The rate a long_rules source names: a rule's pick in the quick study's range test, or the grid's
    best one-epoch rate or its lower or higher neighbour.

    Args:
        source: a rule (lr_finder.RULES) or a GRID_NEIGHBOURHOOD entry.
        quick_picks: the quick study's range-test picks of the arch (its lr_range JSON's ``picks``).
        grid: evidence.grid.
        best: the index in ``grid`` of the best one-epoch rate (grid_best).
    """
    if source in GRID_NEIGHBOURHOOD:
        step = GRID_NEIGHBOURHOOD.index(source) - 1
        return grid[min(max(best + step, 0), len(grid) - 1)]
    pick = quick_picks[source]
    if "lr" not in pick:
        raise StageError(f"rule {source} picked no rate in the quick study's range test: {pick['error']}")
    return pick["lr"]


def unit(argv: list[str], stage: str, seeds: tuple[int, ...], first: str = "arch") -> tuple[str, int]:
    """(first argument, seed) of `python -m stages.evidence.<stage> <first> <seed>`; the seed one of ``seeds``.

    Args:
        argv: the stage's command-line arguments.
        stage: the stage module's name, for the usage line.
        seeds: the seeds params.yaml lists for this kind.
        first: what the first argument names, for the usage line: arch, or source (long_rules).
    """
    usage = f"usage: python -m stages.evidence.{stage} <{first}> <seed>"
    if len(argv) != 2 or not argv[1].isascii() or not argv[1].isdigit():
        raise StageError(usage)
    if int(argv[1]) not in seeds:
        raise StageError(f"{usage}: seed {argv[1]} is not one of params.yaml's {', '.join(map(str, seeds))}")
    return argv[0], int(argv[1])


def test_scores(model: Mlp, data: dict) -> dict[str, float]:
    """test_loss and test_accuracy of ``model``, in float64 as the kept model's scores (NaN when the outputs
    are not finite)."""
    x, y = data["test"]
    probs = model.predict(scale(x))
    if not np.all(np.isfinite(probs)):
        return {f"test_{key}": float("nan") for key in ("loss", "accuracy")}
    return {f"test_{key}": value for key, value in scores(probs, y).items()}


def train_run(keras_model, arch, lr: float, seed: int, data: dict, epochs: int, patience: int, batch_size: int,
              compute, detail: bool = False, progress: str | None = None) -> dict:
    """Train a fresh model (``seed``: its init and its shuffling) at ``lr``; its record (run_record).

    Args:
        keras_model: the stages.lib.keras_model module that tf_runtime.load_keras_model returned.
        detail: also record, for the test set, which images the kept model gets right and its confusion matrix.
        progress: the label of the progress lines printed while it trains (keras_model.Progress); None for none.
    """
    model = keras_model.build_model(arch, seed)
    run = keras_model.train(model, lr, data, TrainParams(epochs, batch_size, patience), seed, compute,
                            epoch_scores=lambda m: test_scores(Mlp(arch.layers, keras_model.layer_weights(m)), data),
                            progress=progress)
    weights = keras_model.layer_weights(model)
    finite = all(np.all(np.isfinite(w)) for layer in weights for w in layer)
    return run_record(lr, run.rows, run.best_epoch, run.failure, Mlp(arch.layers, weights) if finite else None,
                      data, detail)
