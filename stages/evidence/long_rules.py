"""Stage long_rules@<source>-<seed>: for evidence.long_rules.arch, a rule's pick in the quick study's range
test (or a rate of the one-epoch grid around its best) trained until early stopping decides.

Usage: python -m stages.evidence.long_rules <source> <seed>
"""

from __future__ import annotations

from stages.evidence.until_early_stopping import train_long
from stages.ground.errors import StageError
from stages.lib.evidence import grid_best, rate_for, unit
from stages.lib.shapes import EVIDENCE, LR_RANGE
from stages.plumbing import paths, records
from stages.plumbing.cli import run
from stages.plumbing.params import load_params


def main(argv: list[str]) -> None:
    params = load_params()
    config = params.evidence.long_rules
    source, seed = unit(argv, "long_rules", config.seeds, first="source")
    if source not in config.rates:
        raise StageError(f"long_rules: {source!r} is not one of evidence.long_rules.rates ({', '.join(config.rates)})")
    name = config.arch
    picks = records.read(paths.lr_range_json(name), {"picks": LR_RANGE["picks"]})["picks"]
    grids = [records.read(paths.evidence_json("grid", name, s), EVIDENCE["grid"]) for s in params.evidence.seeds]
    lr = rate_for(source, picks, params.evidence.grid, grid_best(params.evidence.grid, grids))
    train_long("long_rules", params, name, seed, lr, source, rate=source)


if __name__ == "__main__":
    run(main, skip_teardown=True)
