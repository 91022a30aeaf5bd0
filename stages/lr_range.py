"""Stage lr_range@<arch>: exponential learning-rate sweep, one curve and every rule's pick.

Usage: python -m stages.lr_range <arch>
"""

from __future__ import annotations

import time

from stages.lib import machine, paths
from stages.lib.atomic import write_csv, write_json
from stages.lib.cli import arch_name, run
from stages.lib.data import load_prepared
from stages.lib.lr_finder import suggest_all
from stages.lib.params import load_params
from stages.lib.tf_runtime import load_keras_model

LOSS_MEANING = "loss = each batch's own training loss (not Keras' running epoch mean)"


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

    usable = slice(0, sweep.stop_step)
    best = int(sweep.smoothed[usable].argmin()) if len(sweep.smoothed[usable]) else None
    write_csv(paths.lr_range_csv(name), ("step", "lr", "loss", "smoothed_loss"),
              [(i, f"{lr:.6g}", f"{loss:.6g}", f"{s:.6g}")
               for i, (lr, loss, s) in enumerate(zip(sweep.lrs, sweep.losses, sweep.smoothed))])
    write_json(paths.lr_range_json(name), {
        "arch": name,
        "loss_column": LOSS_MEANING,
        "steps": len(sweep.lrs),
        "stop_step": sweep.stop_step,
        "stop_reason": sweep.stop_reason or "sweep ran to the end",
        "min_smoothed_loss": None if best is None else float(sweep.smoothed[best]),
        "lr_at_min": None if best is None else float(sweep.lrs[best]),
        "picks": suggest_all(sweep.lrs, sweep.smoothed, sweep.stop_step),
    })
    write_json(paths.timing_json(name, "lr_range"),
               {"seconds": round(seconds, 2),
                "machine": machine.record(params.compute.numerics, params.compute.threads)})
    print(f"lr_range@{name}: {len(sweep.lrs)} batches in {seconds:.1f} s; stop: {sweep.stop_reason or 'none'}")


if __name__ == "__main__":
    run(main, skip_teardown=True)  # TensorFlow's interpreter teardown alone takes ~2 s
