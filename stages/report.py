"""Stage report: reports/report.md and reports/figures/ for the archs params.yaml lists."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np

from stages.lib import paths
from stages.lib.atomic import write_text
from stages.lib.cli import read_json, run
from stages.lib.errors import StageError
from stages.lib.data import load_split
from stages.lib.figures import (confident_errors_figure, confusion_figure, digit_grid_figure, learning_curves_figure,
                                lr_range_figure, lr_rules_figure)
from stages.lib.params import apply_overrides, load_params, load_raw, parse_params
from stages.lib.schema import Params, ParamsError
from stages.lib.report import ArchResult, Study, render_report, study_matches

SAMPLE_DIGITS = 20


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def read_curve(path: Path) -> dict[str, np.ndarray]:
    rows = read_csv(path)
    return {key: np.array([float(row[key]) for row in rows]) for key in ("lr", "loss", "smoothed_loss")}


def read_history(path: Path) -> list[dict]:
    return [{key: int(value) if key in ("seed", "epoch") else float(value) for key, value in row.items()}
            for row in read_csv(path)]


def under(reports: Path, path: Path) -> Path:
    """``path`` (one of paths' reports/ files) inside another reports folder, e.g. a study's copy."""
    return reports / path.relative_to(paths.REPORTS)


def machine_records(archs) -> dict[str, dict | None]:
    """stage@arch -> the machine record its timings file holds (None in files from before records)."""
    return {f"{stage}@{name}": read_json(paths.timing_json(name, stage)).get("machine")
            for name in archs for stage in ("lr_range", "train", "evaluate")}


def arch_result(params: Params, name: str, reports: Path = paths.REPORTS) -> ArchResult:
    """An arch's metrics and range test from ``reports`` (this run's, or a study's copy), plus timings."""
    arch = params.archs[name]
    metrics = read_json(under(reports, paths.metrics_json(name)))
    timings = {stage: read_json(under(reports, paths.timing_json(name, stage))) for stage in ("lr_range", "train", "evaluate")}
    metrics["lr_range_seconds"] = timings["lr_range"]["seconds"]
    metrics["train_seconds_per_epoch"] = timings["train"]["seconds_per_epoch"]
    metrics["inference_ms"] = timings["evaluate"]["inference_ms_per_1000_images"]
    return ArchResult(name, arch.hidden, arch.activation, metrics, read_json(paths.lr_range_json(name)))


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
    x_test, y_test = load_split("test")

    results = [arch_result(params, name) for name in params.archs]
    curves = {name: read_curve(paths.lr_range_csv(name)) for name in params.archs}
    errors = {name: read_json(paths.errors_json(name)) for name in params.archs}
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
    if params.train.epochs > 1:
        figures["curves"] = "learning_curves.png"
        learning_curves_figure({name: read_history(paths.history_csv(name)) for name in params.archs},
                               paths.FIGURES / figures["curves"])

    studies = []
    for name, overrides in params.studies.items():
        study, histories = load_study(params, raw, name, overrides)
        if study.results and max(row["epoch"] for rows in histories.values() for row in rows) > 0:
            figure = f"learning_curves_{name}.png"
            learning_curves_figure(histories, paths.FIGURES / figure)
            study = dataclasses.replace(study, figure=f"figures/{figure}")
        studies.append(study)
    remove_unused_figures(set(figures.values()) | {Path(s.figure).name for s in studies if s.figure})

    markdown = render_report(params, results, {key: f"figures/{name}" for key, name in figures.items()},
                             studies, read_json(paths.LR_STUDY_JSON), machine_records(params.archs))
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
