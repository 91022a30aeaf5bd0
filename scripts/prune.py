"""`make prune`: remove what earlier runs wrote for architectures no longer in params.yaml.

DVC leaves a removed stage's outputs where they are. This removes exactly those: the per-arch
outputs (stages/plumbing/paths.py) of an arch that the pipelines' own records name (the quick study's
and the evidence's), that params.yaml no longer lists, and that hold only what the stages write;
in an arch's evidence folders (reports/evidence/<kind>/<arch>/ and its timings), the files named
as the stages name theirs. Anything a user put in models/ or reports/ (a backup copy, a pretrained
model, notes) is never touched, and what is left in those outputs is listed.

DVC also keeps a removed stage's entry in the lock file for ever (treeverse/dvc#5293): this drops the entries
of stages neither pipeline has any more, as DVC's own lock writes edit the file.

Usage: python -m scripts.prune [--dry-run]
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from scripts.check_lock import EVIDENCE_DVC_YAML, EVIDENCE_LOCK, ROOT_DVC_YAML, ROOT_LOCK, few, locked_stages
from scripts.lanes import DVC
from stages.ground.errors import StageError
from stages.plumbing import paths
from stages.plumbing.cli import refuse, run
from stages.plumbing.params import load_params

USAGE = "usage: python -m scripts.prune [--dry-run]"
LOCKS = {ROOT_DVC_YAML: ROOT_LOCK, EVIDENCE_DVC_YAML: EVIDENCE_LOCK}


def pipeline_stages(pipeline: Path) -> set[str]:
    """The names of the stages ``pipeline`` has now, as its lock names them (``train@base``)."""
    listed = subprocess.run([*DVC, "stage", "list", "--name-only", str(pipeline)], capture_output=True, text=True,
                            encoding="utf-8", errors="backslashreplace", check=False)
    if listed.returncode != 0:
        raise StageError(f"`dvc stage list {pipeline}` failed: {listed.stderr.strip()[-300:]}: fix what it names, "
                         "then rerun `make prune`")
    return {line.rpartition(":")[2] for line in listed.stdout.splitlines() if line.strip()}


def drop_entries(lock: Path, stages: list[str]) -> None:
    from dvc.utils.serialize import modify_yaml  # what DVC writes its lock files with: the rest stays as it was

    with modify_yaml(lock) as data:
        for stage in stages:
            del data["stages"][stage]


def main(argv: list[str]) -> None:
    if argv not in ([], ["--dry-run"]):
        raise refuse(USAGE, argv)
    archs = load_params().networks
    leftovers, kept = paths.prunable(archs), paths.left_alone(archs)
    stale = {lock: entries for pipeline, lock in LOCKS.items()
             if pipeline.is_file() and (entries := sorted(locked_stages(lock) - pipeline_stages(pipeline)))}
    if not leftovers and not stale:
        print("prune: nothing to remove")
    for path in leftovers:
        if argv:
            print(f"prune: would remove {path}")
            continue
        shutil.rmtree(path) if path.is_dir() else path.unlink()
        print(f"prune: removed {path}")
    for lock, entries in stale.items():
        if not argv:
            drop_entries(lock, entries)
        print(f"prune: {'would remove' if argv else 'removed'} {lock}'s entries of {len(entries)} stage(s) its "
              f"pipeline no longer has: {few(entries)}")
    for path in kept:
        why = "holds files no stage writes" if path.is_dir() and not path.is_symlink() else "no stage writes it"
        print(f"prune: keeps {path}: {why}")


if __name__ == "__main__":
    run(main, usage=USAGE)
