"""Stage picks@<arch>-<seed> (and heldout_picks@<arch>-<seed>): one epoch at every rate any rule picked in any
of the arch's range tests.

Usage: python -m stages.evidence.picks <arch> <seed>
"""

from __future__ import annotations

from stages.evidence.one_epoch import train_rates
from stages.lib.evidence import distinct_picks, unit
from stages.lib.shapes import EVIDENCE
from stages.plumbing import paths, records
from stages.plumbing.cli import run
from stages.plumbing.params import load_params


def main(argv: list[str]) -> None:
    params = load_params()
    name, seed = unit(argv, "picks", params.evidence.seeds)
    params.arch(name, heldout=True)
    ranges = [records.read(paths.evidence_json("range", name, s), EVIDENCE["range"])
              for s in params.evidence.range_seeds]
    train_rates("picks", params, name, seed, distinct_picks(ranges))


if __name__ == "__main__":
    run(main, skip_teardown=True)
