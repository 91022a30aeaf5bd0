"""Stage grid@<arch>-<seed> (and heldout_grid@<arch>-<seed>): one epoch at every rate of evidence.grid, one
training seed.

Usage: python -m stages.evidence.grid <arch> <seed>
"""

from __future__ import annotations

from stages.evidence.one_epoch import train_rates
from stages.lib.evidence import unit
from stages.plumbing.cli import run
from stages.plumbing.params import load_params


def main(argv: list[str]) -> None:
    params = load_params()
    name, seed = unit(argv, "grid", params.evidence.seeds)
    train_rates("grid", params, name, seed, list(params.evidence.grid))


if __name__ == "__main__":
    run(main, skip_teardown=True)
