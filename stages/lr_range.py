"""Stage lr_range@<arch>: exponential learning-rate sweep, one curve and every rule's pick.

Usage: python -m stages.lr_range <arch>
"""

from __future__ import annotations

from stages.ground.atomic import write_csv
from stages.ground.clock import Stopwatch
from stages.ground.errors import StageError
from stages.lib import shapes
from stages.lib.data import load_prepared, part_size
from stages.lib.lr_finder import CURVE_COLUMNS, MIN_POINTS, SKIP_END, SKIP_START, curve_rows, sweep_record
from stages.lib.tf_runtime import load_keras_model
from stages.plumbing import machine, paths, records
from stages.plumbing.cli import arch_name, run
from stages.plumbing.params import load_params


def check_sweep_length(examples: int, batch_size: int, epochs: int) -> None:
    """A sweep too short for any rule to pick from fails now, naming what makes it short."""
    per_epoch = -(-examples // batch_size)
    needed = SKIP_START + MIN_POINTS + SKIP_END
    if per_epoch * epochs < needed:
        raise StageError(f"lr_range: {examples:,} training images in batches of {batch_size:,} give {per_epoch:,} "
                         f"batch(es) per epoch, {per_epoch * epochs:,} in {epochs:,} epoch(s); a range test needs "
                         f"at least {needed}: lower lr_range.batch_size or raise lr_range.epochs")


def main(argv: list[str]) -> None:
    name = arch_name(argv, "lr_range")
    params = load_params()
    arch = params.arch(name)
    sweep_params = params.lr_range_for(arch)
    check_sweep_length(part_size("train", paths.PREPARED_DIR), sweep_params.batch_size, sweep_params.epochs)
    keras_model = load_keras_model(params.compute)  # TensorFlow only once params and data are known good

    x, y = load_prepared(paths.PREPARED_DIR, parts=("train",))["train"]
    model = keras_model.build_model(arch, params.seed)
    clock = Stopwatch()
    sweep = keras_model.range_test(model, x, y, sweep_params, params.seed, params.compute, progress=f"lr_range@{name}")
    took = clock.took()

    write_csv(paths.lr_range_csv(name), CURVE_COLUMNS, curve_rows(sweep.curve))
    records.write_json(paths.lr_range_json(name), {"arch": name, **sweep_record(sweep.curve, sweep.stop_reason)},
                       shapes.LR_RANGE)
    records.write_json(paths.timing_json(name, "lr_range"),
                       {**took.record(), "machine": machine.record(params.compute.numerics, params.compute.threads)},
                       shapes.TIMINGS["lr_range"])
    print(f"lr_range@{name}: {len(sweep.curve.lrs)} batches in {took.seconds:.1f} s; "
          f"stop: {sweep.stop_reason or 'none'}")


if __name__ == "__main__":
    run(main, skip_teardown=True)  # TensorFlow's interpreter teardown alone takes ~2 s
