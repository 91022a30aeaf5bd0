"""Stage report: reports/report.md and reports/figures/ for the archs params.yaml lists."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from stages.lib import paths, records
from stages.lib.atomic import write_text
from stages.lib.cli import run
from stages.lib.data import load_split
from stages.lib.errors import StageError
from stages.lib.figures import (
    confident_errors_figure,
    confusion_figure,
    digit_grid_figure,
    learning_curves_figure,
    lr_range_figure,
    lr_rules_figure,
)
from stages.lib.params import apply_overrides, load_params, load_raw, parse_params
from stages.lib.records import ANY, INT, NUMBER, PICK, POSITIVE, STR, ListOf, MapOf, Maybe
from stages.lib.report import ArchResult, Study, render_report, study_matches
from stages.lib.schema import Params, ParamsError

SAMPLE_DIGITS = 20

# What the report relies on in each file the stages wrote (stages.lib.records explains the notation).
MACHINE = Maybe({"cpu": STR, "isa": STR, "cores": Maybe(INT)})
TIMINGS = {
    "lr_range": {"seconds": NUMBER, "machine?": MACHINE},
    "train": {"seconds_per_epoch": NUMBER, "machine?": MACHINE},
    "evaluate": {"inference_ms_per_1000_images": Maybe(NUMBER), "machine?": MACHINE},
}
METRICS = {"failed": Maybe(STR), "params": INT, "size_bytes": INT, "lr": POSITIVE, "lr_chosen_by": STR,
           "n_train": INT, "n_test": INT, "repeats": INT, "val_accuracy": Maybe(NUMBER),
           "test_accuracy": Maybe(NUMBER), "test_accuracy_std": Maybe(NUMBER), "test_loss": Maybe(NUMBER),
           "seeds": MapOf({"epochs_run": INT, "test_accuracy?": NUMBER})}
LR_RANGE = {"picks": MapOf(PICK), "steps": INT, "stop_step": Maybe(INT), "stop_reason": STR,
            "min_smoothed_loss": Maybe(NUMBER), "lr_at_min": Maybe(NUMBER)}
ERRORS = {"confusion": Maybe(ListOf(ListOf(INT, 10, 10), 10, 10)),
          "confident_errors": ListOf({"index": INT, "label": INT, "predicted": INT, "confidence": NUMBER})}
LR_STUDY = {"settings": ANY, "grid": ListOf(POSITIVE),
            "archs": MapOf({"hidden": ListOf(INT), "activation": STR, "picks": MapOf(PICK),
                            "runs": ListOf({"lr": POSITIVE, "test_accuracy?": NUMBER})})}
CURVE_COLUMNS = {"lr": float, "loss": float, "smoothed_loss": float}
HISTORY_COLUMNS = {"seed": int, "epoch": int, "loss": float, "accuracy": float, "val_loss": float,
                   "val_accuracy": float, "lr": float}


def read_curve(path: Path) -> dict[str, np.ndarray]:
    rows = records.read_csv(path, CURVE_COLUMNS)
    return {key: np.array([row[key] for row in rows]) for key in CURVE_COLUMNS}


def read_history(path: Path) -> list[dict]:
    return records.read_csv(path, HISTORY_COLUMNS)


def read_metrics(path: Path) -> dict:
    metrics = records.read(path, METRICS)
    if not metrics["failed"]:
        unscored = [key for key in ("val_accuracy", "test_accuracy", "test_loss") if metrics[key] is None]
        scored_seeds = sum("test_accuracy" in run for run in metrics["seeds"].values())
        if scored_seeds >= 2 and metrics["test_accuracy_std"] is None:
            unscored.append("test_accuracy_std")
        if unscored:
            raise records.damaged(path, f"{', '.join(unscored)} null for an arch that did not fail")
    return metrics


def read_lr_study(path: Path) -> dict:
    study = records.read(path, LR_STUDY)
    rules = {name: sorted(entry["picks"]) for name, entry in study["archs"].items()}
    if len({tuple(names) for names in rules.values()}) > 1:
        raise records.damaged(path, f"its archs have different rules' picks: {rules}")
    for name, entry in study["archs"].items():
        missing = sorted(set(study["grid"]) - {run["lr"] for run in entry["runs"]})
        if missing:
            raise records.damaged(path, f"archs.{name}.runs has no run at grid rates {missing}")
    return study


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


def under(reports: Path, path: Path) -> Path:
    """``path`` (one of paths' reports/ files) inside another reports folder, e.g. a study's copy."""
    return reports / path.relative_to(paths.REPORTS)


def machine_records(archs) -> dict[str, dict | None]:
    """stage@arch -> the machine record its timings file holds (None in files from before records)."""
    return {f"{stage}@{name}": records.read(paths.timing_json(name, stage), TIMINGS[stage]).get("machine")
            for name in archs for stage in TIMINGS}


def arch_result(params: Params, name: str, reports: Path = paths.REPORTS) -> ArchResult:
    """An arch's metrics and range test from ``reports`` (this run's, or a study's copy), plus timings."""
    arch = params.archs[name]
    metrics = read_metrics(under(reports, paths.metrics_json(name)))
    timings = {stage: records.read(under(reports, paths.timing_json(name, stage)), spec)
               for stage, spec in TIMINGS.items()}
    metrics["lr_range_seconds"] = timings["lr_range"]["seconds"]
    metrics["train_seconds_per_epoch"] = timings["train"]["seconds_per_epoch"]
    metrics["inference_ms"] = timings["evaluate"]["inference_ms_per_1000_images"]
    return ArchResult(name, arch.hidden, arch.activation, metrics, records.read(paths.lr_range_json(name), LR_RANGE))


def load_study(params: Params, raw: dict, name: str, overrides: dict) -> tuple[Study, dict[str, list[dict]]]:
    """A study's results for the archs whose study params match the current ones (with its overrides)."""
    folder = paths.STUDIES / name
    expected = parse_params(apply_overrides(raw, overrides))
    try:
        made_with = load_params(folder / "params.yaml")
    except ParamsError:
        made_with = None  # missing or from an older schema: every arch is stale
    fresh = [a for a in params.archs if made_with is not None and study_matches(expected, made_with, a)]
    results = [arch_result(expected, a, folder) for a in fresh]
    histories = {a: read_history(under(folder, paths.history_csv(a))) for a in fresh}
    study = Study(name, overrides, results, [a for a in params.archs if a not in fresh], figure=None)
    return study, histories


def main(argv: list[str]) -> None:
    raw = load_raw()
    params = parse_params(raw)
    leftovers = paths.prunable(params.archs)
    if leftovers:
        print(f"report: {len(leftovers)} output(s) of architectures no longer in params.yaml are still in "
              "models/ and reports/; `make prune` lists and removes them")
    # Everything is read and checked before anything is drawn or written: a damaged input fails fast.
    x_test, y_test = load_split("test")
    results = [arch_result(params, name) for name in params.archs]
    curves = {name: read_curve(paths.lr_range_csv(name)) for name in params.archs}
    check_against_curves(results, curves)
    errors = {name: records.read(paths.errors_json(name), ERRORS) for name in params.archs}
    check_against_test_set(errors, len(x_test))
    histories = ({name: read_history(paths.history_csv(name)) for name in params.archs}
                 if params.train.epochs > 1 else {})
    loaded_studies = [load_study(params, raw, name, overrides) for name, overrides in params.studies.items()]
    lr_study = read_lr_study(paths.LR_STUDY_JSON)
    machines = machine_records(params.archs)

    figures = {"lr_range": "lr_range.png", "lr_rules": "lr_range_rules.png", "digits": "digits.png"}
    lr_range_figure(curves, {r.name: r.metrics["lr"] for r in results}, paths.FIGURES / figures["lr_range"])
    lr_rules_figure(curves, {r.name: r.lr_range for r in results}, {r.name: r.metrics["lr_chosen_by"] for r in results},
                    paths.FIGURES / figures["lr_rules"])
    digit_grid_figure(x_test[:SAMPLE_DIGITS], y_test[:SAMPLE_DIGITS], paths.FIGURES / figures["digits"])
    scored = {name: e for name, e in errors.items() if e["confusion"] is not None}  # failed archs have none
    if scored:
        figures |= {"confusion": "confusion.png", "errors": "confident_errors.png"}
        confusion_figure({name: np.array(e["confusion"]) for name, e in scored.items()},
                         paths.FIGURES / figures["confusion"])
        confident_errors_figure({name: e["confident_errors"] for name, e in scored.items()}, x_test,
                                paths.FIGURES / figures["errors"])
    if histories:
        figures["curves"] = "learning_curves.png"
        learning_curves_figure(histories, paths.FIGURES / figures["curves"])

    studies = []
    for study, study_histories in loaded_studies:
        if study.results and max(row["epoch"] for rows in study_histories.values() for row in rows) > 0:
            figure = f"learning_curves_{study.name}.png"
            learning_curves_figure(study_histories, paths.FIGURES / figure)
            study = dataclasses.replace(study, figure=f"figures/{figure}")
        studies.append(study)
    remove_unused_figures(set(figures.values()) | {Path(s.figure).name for s in studies if s.figure})

    markdown = render_report(params, results, {key: f"figures/{name}" for key, name in figures.items()},
                             studies, lr_study, machines)
    write_text(paths.REPORT_MD, markdown)
    print(f"report: {paths.REPORT_MD} with {len(results)} architecture(s), {len(studies)} study section(s)")
    failures = [f"{r.name}: {r.metrics['failed']}" for r in results if r.metrics["failed"]]
    if failures:
        # The report is written (read it), but the pipeline must not look green.
        raise StageError("training failed for:\n  " + "\n  ".join(failures))


def remove_unused_figures(used: set[str]) -> None:
    """A figure the report no longer links (e.g. learning curves after going back to one epoch) goes."""
    for path in paths.FIGURES.glob("*.png"):
        if path.name not in used:
            path.unlink()


if __name__ == "__main__":
    run(main)
