"""Stage train@<arch>: a fresh, identically initialised model trained with SGD at its rate.

The rate is the arch's fixed ``lr`` if params give one, else the pick of the
configured rule from reports/lr_range/<arch>.json. One run per seed
(``train.repeats``), each keeping its best epoch: models/<arch>/ and models/logs/<arch>/.

Usage: python -m stages.train <arch>
"""

from __future__ import annotations

from stages.ground.atomic import atomic_dir, write_csv
from stages.ground.clock import Stopwatch
from stages.ground.errors import StageError
from stages.ground.spec import POSITIVE
from stages.lib import shapes
from stages.lib.data import load_prepared, part_size
from stages.lib.lr_finder import chosen_rate
from stages.lib.tf_runtime import load_keras_model
from stages.plumbing import machine, paths, records
from stages.plumbing.cli import arch_name, run
from stages.plumbing.params import load_params

HISTORY_HEADER = list(shapes.HISTORY_COLUMNS)
PER_EPOCH = "cpu_seconds_per_epoch"  # the estimate's measure


def cost_line(name: str, epochs: int, steps: int, seeds: int, seconds_per_epoch: float | None) -> str:
    """What this run will do, and how long it took last time: a long run never starts silently.

    Args:
        name: the arch.
        epochs: train.epochs, the most each seed trains.
        steps: batches per epoch.
        seeds: how many seeds train.
        seconds_per_epoch: CPU seconds per epoch of the last run's timing record; None when there is none.
    """
    work = f"train@{name}: up to {epochs:,} epoch(s) × {steps:,} steps × {seeds:,} seed(s)"
    if seconds_per_epoch is None:
        return f"{work}; no time estimate yet (no usable {paths.timing_json(name, 'train')} from an earlier run)"
    return (f"{work}; about {duration(epochs * seeds * seconds_per_epoch)} at most, at the last run's "
            f"{seconds_per_epoch:.3g} CPU s/epoch ({paths.timing_json(name, 'train')})")


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def last_seconds_per_epoch(name: str) -> float | None:
    """CPU seconds per epoch, what load inflates least (scripts.lanes orders stages by the same measure), from
    this workspace's previous run (timings are not DVC outputs: DVC leaves them, git ignores them)."""
    try:
        return records.read(paths.timing_json(name, "train"), {PER_EPOCH: POSITIVE})[PER_EPOCH]
    except StageError:
        return None  # none yet, or damaged: this run rewrites it


def main(argv: list[str]) -> None:
    name = arch_name(argv, "train")
    params = load_params()
    arch = params.arch(name)
    # Only the pick of the rule in use, and only when the rate is not fixed in params.
    rule = params.rule_for(arch)
    needed = {"picks": {rule: shapes.LR_RANGE["picks"][rule]}} if arch.lr is None else {}
    lr, how = chosen_rate(arch.lr, rule, records.read(paths.lr_range_json(name), needed).get("picks"), name)
    train_params = params.train_for(arch)
    steps = -(-part_size("train", paths.PREPARED_DIR) // train_params.batch_size)
    print(cost_line(name, train_params.epochs, steps, len(params.seeds), last_seconds_per_epoch(name)), flush=True)
    keras_model = load_keras_model(params.compute)  # TensorFlow only once params are known good

    data = load_prepared(paths.PREPARED_DIR, parts=("train", "val"))
    runs, history, clock = [], [], Stopwatch()
    with atomic_dir(paths.model_dir(name)) as folder, atomic_dir(paths.logs_dir(name)) as logs:
        for seed in params.seeds:
            model = keras_model.build_model(arch, seed)
            run = keras_model.train(model, lr, data, train_params, seed, params.compute,
                                    paths.tensorboard_dir(name, seed, logs), progress=f"train@{name} seed {seed}")
            # Saved even when training failed: evaluate and DVC expect the file; the metrics say it failed.
            keras_model.save_model(model, paths.model_file(name, seed, folder))
            runs.append({"seed": seed, "epochs_run": len(run.rows), "best_epoch": run.best_epoch,
                         "failed": run.failure})
            history += [[seed, row["epoch"]] + [f"{row[key]:.6g}" for key in HISTORY_HEADER[2:]] for row in run.rows]
            print(f"train@{name} seed {seed}: " + (f"FAILED: {run.failure}" if run.failure else
                  f"lr {lr:.4g} ({how}), {len(run.rows)} epoch(s), kept epoch {run.best_epoch + 1}"), flush=True)

    took = clock.took()  # model building and saving included: they are part of what a user waits for
    write_csv(paths.history_csv(name), HISTORY_HEADER, history)
    failures = [f"seed {r['seed']}: {r['failed']}" for r in runs if r["failed"]]
    records.write_json(paths.train_json(name), {
        "arch": name,
        "lr": lr,
        "lr_chosen_by": how,
        "runs": runs,
        "failed": "; ".join(failures) or None,  # one failed seed fails the arch: its rate is not safe
        "software": machine.software(),
    }, shapes.TRAIN)
    epochs = max(sum(r["epochs_run"] for r in runs), 1)
    records.write_json(paths.timing_json(name, "train"),
                       {**took.record(), "seconds_per_epoch": round(took.seconds / epochs, 3),
                        PER_EPOCH: round(took.cpu_seconds / epochs, 3),
                        "machine": machine.record(params.compute.numerics, params.compute.threads)},
                       shapes.TIMINGS["train"])


if __name__ == "__main__":
    run(main, skip_teardown=True)  # TensorFlow's interpreter teardown alone takes ~2 s
