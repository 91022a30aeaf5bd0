"""What grid and picks share: one epoch at each of a list of rates, for one arch and training seed."""

from __future__ import annotations

from stages.ground.clock import Stopwatch
from stages.lib import shapes
from stages.lib.data import load_prepared
from stages.lib.evidence import train_run
from stages.lib.schema import Params
from stages.lib.tf_runtime import load_keras_model
from stages.plumbing import machine, paths, records


def train_rates(kind: str, params: Params, name: str, seed: int, rates: list[float]) -> None:
    """Train ``name`` from ``seed`` for one epoch at each of ``rates``; write the record and timing.

    Args:
        kind: the stage's kind (grid or picks): where the record goes and the shape it must have.
        name: the arch, one of params.archs or evidence.heldout.
        rates: the rates to train at, one run each, recorded in this order.
    """
    arch = params.arch(name, heldout=True)
    print(f"{kind}@{name}-{seed}: {len(rates)} rate(s), one epoch each", flush=True)
    keras_model = load_keras_model(params.compute)
    data = load_prepared(paths.PREPARED_DIR, parts=("train", "val", "test"))
    runs, clock = [], Stopwatch()
    for lr in rates:
        runs.append(train_run(keras_model, arch, lr, seed, data, 1, params.evidence.patience,
                              params.train_for(arch).batch_size, params.compute,
                              progress=f"{kind}@{name}-{seed} lr {lr:.4g}"))
        print(f"{kind}@{name}-{seed}: lr {lr:.4g}: val accuracy {runs[-1].get('val_accuracy')}", flush=True)
    took = clock.took()
    records.write_json(paths.evidence_json(kind, name, seed), {"kind": kind, "arch": name, "seed": seed, "runs": runs},
                       shapes.EVIDENCE[kind])
    records.write_json(paths.evidence_timing(kind, name, seed),
                       {**took.record(), "epochs": len(rates),
                        "machine": machine.record(params.compute.numerics, params.compute.threads)},
                       shapes.EVIDENCE_TIMING)
