"""Stage lr_range@<arch>: exponential learning-rate sweep, one curve and every rule's pick.

Usage: python -m stages.lr_range <arch>
"""

from __future__ import annotations

import time

from stages.lib import machine, paths
from stages.lib.atomic import write_csv, write_json
from stages.lib.cli import arch_name, run
from stages.lib.data import load_prepared
from stages.lib.lr_finder import CURVE_COLUMNS, curve_rows, sweep_record
from stages.lib.params import load_params
from stages.lib.tf_runtime import load_keras_model


def main(argv: list[str]) -> None:
    name = arch_name(argv, "lr_range")
    params = load_params()
    arch = params.arch(name)
    keras_model = load_keras_model(params.compute)  # TensorFlow only once params are known good

    x, y = load_prepared(parts=("train",))["train"]
    model = keras_model.build_model(arch, params.seed)
    started = time.perf_counter()
    sweep = keras_model.range_test(model, x, y, params.lr_range, params.seed, params.compute)
    seconds = time.perf_counter() - started

    write_csv(paths.lr_range_csv(name), CURVE_COLUMNS, curve_rows(sweep.curve))
    write_json(paths.lr_range_json(name), {"arch": name, **sweep_record(sweep.curve, sweep.stop_reason)})
    write_json(paths.timing_json(name, "lr_range"),
               {"seconds": round(seconds, 2),
                "machine": machine.record(params.compute.numerics, params.compute.threads)})
    print(f"lr_range@{name}: {len(sweep.curve.lrs)} batches in {seconds:.1f} s; "
          f"stop: {sweep.stop_reason or 'none'}")


if __name__ == "__main__":
    run(main, skip_teardown=True)  # TensorFlow's interpreter teardown alone takes ~2 s
