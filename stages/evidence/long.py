"""Stage long@<arch>-<seed>: the quick study's rate for this arch, trained until early stopping decides.

Usage: python -m stages.evidence.long <arch> <seed>
"""

from __future__ import annotations

from stages.evidence.until_early_stopping import train_long
from stages.lib.evidence import unit
from stages.lib.lr_finder import chosen_rate
from stages.lib.shapes import LR_RANGE
from stages.plumbing import paths, records
from stages.plumbing.cli import run
from stages.plumbing.params import load_params


def main(argv: list[str]) -> None:
    params = load_params()
    name, seed = unit(argv, "long", params.evidence.seeds)
    arch = params.arch(name)
    rule = params.rule_for(arch)
    picks = records.read(paths.lr_range_json(name), {"picks": LR_RANGE["picks"]})["picks"] if arch.lr is None else {}
    lr, how = chosen_rate(arch.lr, rule, picks, name)
    train_long("long", params, name, seed, lr, how, detail=True)


if __name__ == "__main__":
    run(main, skip_teardown=True)
