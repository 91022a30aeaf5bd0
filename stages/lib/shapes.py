"""What each record the stages write holds: its shape, declared once (stages.ground.spec explains the
notation). The stage that writes a record checks it against its shape before writing (records.write_json), and
every reader checks what it reads (records.read): all of it, or the part it uses, taken from here (one rule's
pick: ``{"picks": {rule: LR_RANGE["picks"][rule]}}``). The keys here decide what the writers write, so every
stage that writes or reads a record lists this module among its deps.
"""

from __future__ import annotations

from stages.ground.spec import (
    ANY,
    COUNT,
    FRACTION,
    INDEX,
    INT,
    NONNEGATIVE,
    NUMBER,
    PICK,
    POSITIVE,
    STR,
    ListOf,
    MapOf,
    Maybe,
)
from stages.lib.lr_finder import RULES
from stages.lib.schema import NUM_CLASSES

# The quick study (dvc.yaml)
MACHINE = Maybe({"cpu": STR, "isa": STR, "cores": Maybe(INT)})  # machine.record(); files from before it have none
CONFUSION = ListOf(ListOf(INDEX, NUM_CLASSES, NUM_CLASSES), NUM_CLASSES, NUM_CLASSES)  # rows: true digit
LR_RANGE = {"arch": STR, "picks": {rule: PICK for rule in RULES}, "steps": COUNT, "stop_step": Maybe(INDEX),
            "stop_reason": STR, "min_smoothed_loss": Maybe(NONNEGATIVE), "lr_at_min": Maybe(POSITIVE)}
SOFTWARE = {"python": STR, "tensorflow": STR, "keras": STR, "numpy": STR}  # machine.software()
TRAIN = {"arch": STR, "lr": POSITIVE, "lr_chosen_by": STR, "failed": Maybe(STR),
         "runs": ListOf({"seed": INT, "epochs_run": COUNT, "best_epoch": Maybe(INDEX), "failed": Maybe(STR)},
                        min_len=1), "software": SOFTWARE}
EVALUATION = {"failed": Maybe(STR), "params": COUNT, "size_bytes": COUNT, "lr": POSITIVE, "lr_chosen_by": STR,
           "n_train": COUNT, "n_test": COUNT, "repeats": COUNT, "val_accuracy": Maybe(FRACTION),
           "val_loss": Maybe(NONNEGATIVE), "test_accuracy": Maybe(FRACTION), "test_accuracy_std": Maybe(NONNEGATIVE),
           "test_loss": Maybe(NONNEGATIVE),
           "seeds": MapOf({"epochs_run": COUNT, "best_epoch": Maybe(INDEX), "val_accuracy?": FRACTION,
                           "val_loss?": NONNEGATIVE, "test_accuracy?": FRACTION, "test_loss?": NONNEGATIVE})}
# The headline, per arch: the only quick-study metrics (`dvc exp show`, `dvc metrics diff`), taken from EVALUATION.
METRIC_KEYS = ("val_accuracy", "val_loss", "test_accuracy", "test_loss", "lr", "params")
METRICS = {key: EVALUATION[key] for key in METRIC_KEYS}
PREDICTIONS_COLUMNS = {"actual": int, "predicted": int}  # the first seed's, per test image
ERRORS = {"seed": Maybe(INT), "confusion": Maybe(CONFUSION),
          "confident_errors": ListOf({"index": INDEX, "label": INDEX, "predicted": INDEX, "confidence": FRACTION})}
# What every timing holds (stages.ground.clock): wall and CPU seconds, and the load beside them.
CLOCK = {"seconds": NONNEGATIVE, "cpu_seconds": NONNEGATIVE, "other_cores_busy": Maybe(NONNEGATIVE)}
TIMINGS = {  # per stage, apart from the results
    "lr_range": {**CLOCK, "machine": MACHINE},
    "train": {**CLOCK, "seconds_per_epoch": NONNEGATIVE, "cpu_seconds_per_epoch": NONNEGATIVE, "machine": MACHINE},
    "evaluate": {**CLOCK, "inference_ms_per_1000_images": Maybe(NONNEGATIVE),
                 "inference_cpu_ms_per_1000_images": Maybe(NONNEGATIVE), "machine": MACHINE},
}
HISTORY_COLUMNS = {"seed": int, "epoch": int, "loss": float, "accuracy": float, "val_loss": float,
                   "val_accuracy": float, "lr": float}  # reports/history/<arch>.csv: one row per seed and epoch

# The evidence's records (reports/evidence/<kind>/<arch>/...): each says whose it is (kind, arch, seed).
SCORE_KEYS = ("val_accuracy", "val_loss", "test_accuracy", "test_loss")  # a run's scores: all of them or none
# Per epoch; null where not finite. Test is recorded at every epoch, never used to choose one.
RUN_HISTORY_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy", "test_loss", "test_accuracy")
SCORE = {"accuracy": FRACTION, "loss": NONNEGATIVE}  # what a key ending in _accuracy or _loss holds
RUN = {"lr": POSITIVE, "epochs_run": COUNT, "best_epoch": Maybe(INDEX), "failed": Maybe(STR),
       "history": ListOf({key: Maybe(SCORE[key.rpartition("_")[2]]) for key in RUN_HISTORY_KEYS}),
       **{f"{key}?": SCORE[key.rpartition("_")[2]] for key in SCORE_KEYS}}
UNIT = {"kind": STR, "arch": STR, "seed": INT}
ONE_EPOCH = {**UNIT, "runs": ListOf(RUN, 1)}
LONG_RULES = {**UNIT, "lr_chosen_by": STR, **RUN}
EVIDENCE = {
    "range": {**LR_RANGE, **UNIT},
    "grid": ONE_EPOCH,
    "picks": ONE_EPOCH,
    "long": {**LONG_RULES, "test_correct?": STR, "confusion?": CONFUSION},  # test detail, for paired comparisons
    "long_rules": LONG_RULES,
}
EVIDENCE_TIMING = {**CLOCK, "epochs?": COUNT, "machine": MapOf(ANY)}
# The answer's headline (reports/answer.json), the evidence's one metric: per network its mean accuracies at the
# most accurate epoch; the default rule's mean regret, points.
ANSWER_METRICS = {"networks": MapOf({"val_accuracy": FRACTION, "test_accuracy": FRACTION}),
                  "default_rule": {"in_sample_regret": Maybe(NUMBER), "heldout_regret": Maybe(NUMBER)}}
