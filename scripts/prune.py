"""`make prune`: remove what earlier runs wrote for architectures no longer in params.yaml.

DVC leaves a removed stage's outputs where they are. This removes exactly those: the per-arch
outputs (stages/plumbing/paths.py) of an arch that the pipelines' own records name (the quick study's
and the evidence's), that params.yaml no longer lists, and that hold only what the stages write;
in an arch's evidence folders (reports/evidence/<kind>/<arch>/ and its timings), the files named
as the stages name theirs. Anything a user put in models/ or reports/ (a backup copy, a pretrained
model, notes) is never touched, and what is left in those outputs is listed.

Usage: python -m scripts.prune [--dry-run]
"""

from __future__ import annotations

import shutil

from stages.plumbing import paths
from stages.plumbing.cli import refuse, run
from stages.plumbing.params import load_params

USAGE = "usage: python -m scripts.prune [--dry-run]"


def main(argv: list[str]) -> None:
    if argv not in ([], ["--dry-run"]):
        raise refuse(USAGE, argv)
    archs = load_params().networks
    leftovers, kept = paths.prunable(archs), paths.left_alone(archs)
    if not leftovers:
        print("prune: nothing to remove")
    for path in leftovers:
        if argv:
            print(f"prune: would remove {path}")
            continue
        shutil.rmtree(path) if path.is_dir() else path.unlink()
        print(f"prune: removed {path}")
    for path in kept:
        why = "holds files no stage writes" if path.is_dir() and not path.is_symlink() else "no stage writes it"
        print(f"prune: keeps {path}: {why}")


if __name__ == "__main__":
    run(main, usage=USAGE)
