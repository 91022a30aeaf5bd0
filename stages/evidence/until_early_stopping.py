"""What long and long_rules share: one run until early stopping decides (evidence.max_epochs at most)."""

from __future__ import annotations

from stages.ground.clock import Stopwatch
from stages.lib import shapes
from stages.lib.data import load_prepared
from stages.lib.evidence import train_run
from stages.lib.schema import Params
from stages.lib.tf_runtime import load_keras_model
from stages.plumbing import machine, paths, records


def train_long(kind: str, params: Params, name: str, seed: int, lr: float, how: str, rate: str | None = None,
               detail: bool = False) -> None:
    """Train ``name`` from ``seed`` at ``lr`` until early stopping decides; write its record and timing.

    Args:
        kind: the stage's kind (long or long_rules): where the record goes and the shape it must have.
        name: the arch, one of params.archs.
        how: what named ``lr`` (a rule, a rate source, "fixed in params"): the record's lr_chosen_by.
        rate: the rate source a long_rules record is named after (paths.evidence_json); None for long.
        detail: also record, for the test set, which images the kept model gets right and its confusion matrix.
    """
    arch = params.arch(name)
    e = params.evidence
    print(f"{kind}@{name}-{seed}: lr {lr:.4g} ({how}), up to {e.max_epochs} epochs, patience {e.patience}",
          flush=True)
    keras_model = load_keras_model(params.compute)
    data = load_prepared(paths.PREPARED_DIR, parts=("train", "val", "test"))
    clock = Stopwatch()
    record = train_run(keras_model, arch, lr, seed, data, e.max_epochs, e.patience, params.train_for(arch).batch_size,
                       params.compute, detail=detail, progress=f"{kind}@{name}-{seed}")
    took = clock.took()
    records.write_json(paths.evidence_json(kind, name, seed, rate),
                       {"kind": kind, "arch": name, "seed": seed, "lr_chosen_by": how, **record},
                       shapes.EVIDENCE[kind])
    records.write_json(paths.evidence_timing(kind, name, seed, rate),
                       {**took.record(), "epochs": record["epochs_run"],
                        "machine": machine.record(params.compute.numerics, params.compute.threads)},
                       shapes.EVIDENCE_TIMING)
    print(f"{kind}@{name}-{seed}: {record['epochs_run']} epochs, kept epoch "
          f"{None if record['best_epoch'] is None else record['best_epoch'] + 1}, "
          f"val accuracy {record.get('val_accuracy')}", flush=True)
