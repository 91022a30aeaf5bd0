"""Stage report: reports/report.md, the quick check, and reports/figures/ for the archs params.yaml lists."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stages.ground.atomic import write_text
from stages.ground.errors import StageError
from stages.lib.data import load_split
from stages.lib.figures import (
    confident_errors_figure,
    confusion_figure,
    digit_grid_figure,
    learning_curves_figure,
    lr_range_figure,
    lr_rules_figure,
)
from stages.lib.lr_finder import CURVE_COLUMNS
from stages.lib.report import ArchResult, render_report
from stages.lib.schema import Params
from stages.lib.shapes import ERRORS, EVALUATION, HISTORY_COLUMNS, LR_RANGE, TRAIN
from stages.plumbing import paths, records
from stages.plumbing.cli import run
from stages.plumbing.params import load_params

SAMPLE_DIGITS = 20

def read_curve(path: Path) -> dict[str, np.ndarray]:
    rows = records.read_csv(path, CURVE_COLUMNS)
    return {key: np.array([row[key] for row in rows]) for key in CURVE_COLUMNS}


def read_history(path: Path) -> list[dict]:
    return records.read_csv(path, HISTORY_COLUMNS)


def read_evaluation(path: Path) -> dict:
    metrics = records.read(path, EVALUATION)
    if not metrics["failed"]:
        unscored = [key for key in ("val_accuracy", "test_accuracy", "test_loss") if metrics[key] is None]
        if len(metrics["seeds"]) >= 2 and metrics["test_accuracy_std"] is None:
            unscored.append("test_accuracy_std")
        if unscored:
            raise records.damaged(path, f"{', '.join(unscored)} null for an arch that did not fail")
        # Every seed is scored, or the arch failed: comparisons over seeds rest on it.
        missing = [f"seeds.{seed}.{key}" for seed, run in metrics["seeds"].items()
                   for key in ("val_accuracy", "test_accuracy") if key not in run]
        if missing:
            raise records.damaged(path, f"{', '.join(missing)} missing for an arch that did not fail")
    return metrics


def check_against_test_set(errors: dict[str, dict], n_test: int) -> None:
    """The confidently wrong digits the figure shows are test images that exist."""
    for name, e in errors.items():
        bad = [item["index"] for item in e["confident_errors"] if not 0 <= item["index"] < n_test]
        if bad:
            raise records.damaged(paths.errors_json(name), f"confident_errors name test images {bad}, "
                                                           f"but there are {n_test}")


def check_against_curves(results: list[ArchResult], curves: dict[str, dict[str, np.ndarray]]) -> None:
    """Where each sweep stopped is a row of its curve."""
    for r in results:
        stop, rows = r.lr_range["stop_step"], len(curves[r.name]["lr"])
        if stop is not None and not 0 <= stop < rows:
            raise records.damaged(paths.lr_range_json(r.name), f"stop_step {stop} is not a row of "
                                                               f"{paths.lr_range_csv(r.name)} ({rows} rows)")


def arch_result(params: Params, name: str) -> ArchResult:
    arch = params.arch(name)
    return ArchResult(name, arch.hidden, arch.activation, read_evaluation(paths.evaluation_json(name)),
                      records.read(paths.lr_range_json(name), LR_RANGE),
                      records.read(paths.train_json(name), {"software": TRAIN["software"]})["software"], arch.dropout)


def main(argv: list[str]) -> None:
    params = load_params()
    leftovers = paths.prunable(params.networks)
    if leftovers:
        print(f"report: {len(leftovers)} output(s) of architectures no longer in params.yaml are still in "
              "models/ and reports/; `make prune` lists and removes them")
    # Everything is read and checked before anything is drawn or written: a damaged input fails fast.
    x_test, y_test = load_split("test", paths.PREPARED_DIR)
    results = [arch_result(params, name) for name in params.archs]
    curves = {name: read_curve(paths.lr_range_csv(name)) for name in params.archs}
    check_against_curves(results, curves)
    errors = {name: records.read(paths.errors_json(name), ERRORS) for name in params.archs}
    check_against_test_set(errors, len(x_test))
    histories = ({name: read_history(paths.history_csv(name)) for name in params.archs}
                 if params.train.epochs > 1 else {})

    figures = {key: FIGURE_FILES[key] for key in ("lr_range", "lr_rules", "digits")}
    lr_range_figure(curves, {r.name: r.metrics["lr"] for r in results}, paths.FIGURES / figures["lr_range"])
    lr_rules_figure(curves, {r.name: r.lr_range for r in results}, {r.name: r.metrics["lr_chosen_by"] for r in results},
                    paths.FIGURES / figures["lr_rules"])
    digit_grid_figure(x_test[:SAMPLE_DIGITS], y_test[:SAMPLE_DIGITS], paths.FIGURES / figures["digits"])
    scored = {name: e for name, e in errors.items() if e["confusion"] is not None}  # failed archs have none
    if scored:
        figures |= {key: FIGURE_FILES[key] for key in ("confusion", "errors")}
        confusion_figure({name: np.array(e["confusion"]) for name, e in scored.items()},
                         paths.FIGURES / figures["confusion"])
        confident_errors_figure({name: e["confident_errors"] for name, e in scored.items()}, x_test,
                                paths.FIGURES / figures["errors"])
    if histories:
        figures["curves"] = FIGURE_FILES["curves"]
        learning_curves_figure(histories, paths.FIGURES / figures["curves"])
    remove_unused_figures(set(figures.values()))

    markdown = render_report(params, results, {key: f"figures/{name}" for key, name in figures.items()},
                             paths.ANSWER_FROM_REPORT)
    write_text(paths.REPORT_MD, markdown)
    print(f"report: {paths.REPORT_MD} with {len(results)} architecture(s)")
    failures = [f"{r.name}: {r.metrics['failed']}" for r in results if r.metrics["failed"]]
    if failures:
        # The report is written (read it), but the pipeline must not look green.
        raise StageError("training failed for:\n  " + "\n  ".join(failures))


# Every figure this stage may draw: it removes only these, never another file put in reports/figures/.
FIGURE_FILES = {"lr_range": "lr_range.png", "lr_rules": "lr_range_rules.png", "digits": "digits.png",
                "confusion": "confusion.png", "errors": "confident_errors.png", "curves": "learning_curves.png"}


def remove_unused_figures(used: set[str]) -> None:
    """A figure of its own the report no longer links (e.g. learning curves after going back to one epoch) goes."""
    for name in set(FIGURE_FILES.values()) - used:
        (paths.FIGURES / name).unlink(missing_ok=True)


if __name__ == "__main__":
    run(main)
