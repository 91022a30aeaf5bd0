"""`make prune`: remove what earlier runs wrote for architectures no longer in params.yaml.

DVC leaves a removed stage's outputs where they are. This removes exactly those: the per-arch
outputs (stages/lib/paths.py) of an arch that the pipeline's own records name, that params.yaml
no longer lists, and that hold only what the stages write. Anything a user put in models/ or
reports/ (a backup copy, a pretrained model, notes) is never touched.

Usage: python -m scripts.prune [--dry-run]
"""

from __future__ import annotations

import shutil

from stages.lib import paths
from stages.lib.cli import run
from stages.lib.errors import StageError
from stages.lib.params import load_params

USAGE = "usage: python -m scripts.prune [--dry-run]"


def main(argv: list[str]) -> None:
    if argv not in ([], ["--dry-run"]):
        raise StageError(f"{USAGE} (got {' '.join(argv)})")
    leftovers = paths.prunable(load_params().archs)
    if not leftovers:
        print("prune: nothing to remove")
        return
    for path in leftovers:
        if argv:
            print(f"prune: would remove {path}")
            continue
        shutil.rmtree(path) if path.is_dir() else path.unlink()
        print(f"prune: removed {path}")


if __name__ == "__main__":
    run(main, usage=USAGE)
