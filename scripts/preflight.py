"""What `make repro JOBS=1` checks before it hands over to plain `dvc repro`, as lanes does before it starts DVC:
params.yaml whole, undamaged lock files, and no file a user put in a folder output of a stage that will run.

Usage: python -m scripts.preflight
"""

from __future__ import annotations

from scripts import lanes
from stages.plumbing.cli import refuse, run

USAGE = "usage: python -m scripts.preflight"


def main(argv: list[str]) -> None:
    if argv:
        raise refuse(USAGE, argv)
    lanes.preflight(["dvc.yaml"])


if __name__ == "__main__":
    run(main, usage=USAGE)
