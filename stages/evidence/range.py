"""Stage range@<arch>-<seed> (and heldout_range@<arch>-<seed>, for evidence.heldout): an LR range test with
another seed, to see how far each rule's pick wanders.

Usage: python -m stages.evidence.range <arch> <seed>
"""

from __future__ import annotations

from stages.ground.atomic import write_csv
from stages.ground.clock import Stopwatch
from stages.lib import shapes
from stages.lib.data import load_prepared
from stages.lib.evidence import unit
from stages.lib.lr_finder import CURVE_COLUMNS, curve_rows, sweep_record
from stages.lib.tf_runtime import load_keras_model
from stages.plumbing import machine, paths, records
from stages.plumbing.cli import run
from stages.plumbing.params import load_params


def main(argv: list[str]) -> None:
    params = load_params()
    name, seed = unit(argv, "range", params.evidence.range_seeds)
    arch = params.arch(name, heldout=True)
    keras_model = load_keras_model(params.compute)

    x, y = load_prepared(paths.PREPARED_DIR, parts=("train",))["train"]
    clock = Stopwatch()
    sweep = keras_model.range_test(keras_model.build_model(arch, seed), x, y, params.lr_range_for(arch), seed,
                                   params.compute, progress=f"range@{name}-{seed}")
    took = clock.took()
    write_csv(paths.evidence_curve_csv(name, seed), CURVE_COLUMNS, curve_rows(sweep.curve))
    records.write_json(paths.evidence_json("range", name, seed),
                       {"kind": "range", "arch": name, "seed": seed, **sweep_record(sweep.curve, sweep.stop_reason)},
                       shapes.EVIDENCE["range"])
    records.write_json(paths.evidence_timing("range", name, seed),
                       {**took.record(), "machine": machine.record(params.compute.numerics, params.compute.threads)},
                       shapes.EVIDENCE_TIMING)
    print(f"range@{name}-{seed}: {len(sweep.curve.lrs)} batches in {took.seconds:.1f} s")


if __name__ == "__main__":
    run(main, skip_teardown=True)
