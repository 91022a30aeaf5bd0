"""Stage report: reports/report.md and reports/figures/ for the archs params.yaml lists."""

from __future__ import annotations

import csv
import shutil

import numpy as np

from stages.lib import paths
from stages.lib.atomic import write_text
from stages.lib.cli import StageError, read_json, run
from stages.lib.figures import lr_range_figure, lr_rules_figure
from stages.lib.params import load_params
from stages.lib.report import ArchResult, render_report

LR_FIGURE = "lr_range.png"
RULES_FIGURE = "lr_range_rules.png"


def read_curve(path) -> dict[str, np.ndarray]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {key: np.array([float(row[key]) for row in rows]) for key in ("lr", "loss", "smoothed_loss")}


def remove_stale_outputs(archs) -> None:
    """Outputs of removed archs would otherwise linger in reports/ and models/ (and in git)."""
    for path in paths.stale_outputs(archs):
        shutil.rmtree(path) if path.is_dir() else path.unlink()
        print(f"report: removed {path} (its arch is no longer in params.yaml)")


def main(argv: list[str]) -> None:
    params = load_params()
    remove_stale_outputs(params.archs)
    results, curves = [], {}
    for name, arch in params.archs.items():
        metrics = read_json(paths.metrics_json(name))
        for stage in ("lr_range", "train"):
            metrics[f"{stage}_seconds"] = read_json(paths.timing_json(name, stage))["seconds"]
        lr_range = read_json(paths.lr_range_json(name))
        curves[name] = read_curve(paths.lr_range_csv(name))
        results.append(ArchResult(name, arch.hidden, arch.activation, metrics, lr_range))
    lr_range_figure(curves, {r.name: r.metrics["lr"] for r in results}, paths.FIGURES / LR_FIGURE)
    lr_rules_figure(curves, {r.name: r.lr_range for r in results}, {r.name: r.metrics["lr_chosen_by"] for r in results},
                    paths.FIGURES / RULES_FIGURE)
    study = read_json(paths.LR_STUDY_JSON)
    markdown = render_report(params, results, lr_figure=f"figures/{LR_FIGURE}",
                             rules_figure=f"figures/{RULES_FIGURE}", study=study)
    write_text(paths.REPORT_MD, markdown)
    print(f"report: {paths.REPORT_MD} with {len(results)} architecture(s)")
    failures = [f"{r.name}: {r.metrics['failed']}" for r in results if r.metrics["failed"]]
    if failures:
        # The report is written (read it), but the pipeline must not look green.
        raise StageError("training failed for:\n  " + "\n  ".join(failures))


if __name__ == "__main__":
    run(main)
