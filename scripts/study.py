"""Opt-in studies: the whole pipeline rerun with some params changed (`make studies`).

Each entry of ``studies:`` in params.yaml names dotted keys to change, as
`dvc exp run -S` would (e.g. five_seeds: {train.repeats: 5}). For each, the project
is copied to a scratch folder (with data/ and the committed outputs, so download,
split and the range tests are not redone), params.yaml is changed there, `dvc repro`
runs the stages that changed, and the per-arch metrics, timings and histories are
copied to reports/studies/<name>/ with the params.yaml that made them. The report
stage shows them, or says they are stale once the params no longer match.

Too slow for every `dvc repro` (five seeds, or up to 50 epochs, for every arch), so
the default pipeline stays one run per arch and these results are committed.

Usage: python -m scripts.study [NAME ...]   (default: every study in params.yaml)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from stages.lib import paths
from stages.lib.atomic import atomic_dir
from stages.lib.cli import run
from stages.lib.errors import StageError
from stages.lib.params import PARAMS_FILE, apply_overrides, dump_raw, load_raw, parse_params

COPIED = ("metrics", "timings", "history")  # folders under reports/ a study keeps
USAGE = "usage: python -m scripts.study [NAME ...]"


def scratch_copy(root: Path, dest: Path) -> None:
    """The project's files as they are now (committed or not, minus git-ignored ones), plus data/."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=root, check=True,
                            capture_output=True, text=True).stdout.split("\0")
    for rel in filter(None, listed):
        if (root / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / rel, dest / rel)
    shutil.copytree(root / "data", dest / "data", dirs_exist_ok=True)
    # The project's cache: DVC reruns a stage whose outputs are not in the cache, even when
    # they match dvc.lock. No git: the scratch copy commits nothing.
    for key, value in (("core.no_scm", "true"), ("cache.dir", str((root / ".dvc" / "cache").resolve()))):
        subprocess.run(["dvc", "config", "--local", key, value], cwd=dest, check=True)


def run_study(root: Path, raw: dict, name: str, overrides: dict) -> None:
    with tempfile.TemporaryDirectory(prefix=f"study.{name}.") as tmp:
        scratch = Path(tmp)
        scratch_copy(root, scratch)
        (scratch / PARAMS_FILE).write_text(dump_raw(apply_overrides(raw, overrides)))
        print(f"study {name}: dvc repro evaluate with {overrides} in {scratch}", flush=True)
        if subprocess.run(["dvc", "repro", "evaluate"], cwd=scratch).returncode != 0:
            raise StageError(f"study {name}: the pipeline failed (output above); reports/studies/{name} unchanged")
        with atomic_dir(root / paths.STUDIES / name) as out:
            for folder in COPIED:
                shutil.copytree(scratch / paths.REPORTS / folder, out / folder)
            shutil.copy2(scratch / PARAMS_FILE, out / "params.yaml")
    print(f"study {name}: wrote {paths.STUDIES / name}", flush=True)


def main(argv: list[str]) -> None:
    options = [arg for arg in argv if arg.startswith("-")]
    if options:
        raise StageError(f"{USAGE}: no options (got {' '.join(options)})")
    raw = load_raw()
    params = parse_params(raw)
    names = argv or list(params.studies)
    unknown = [n for n in names if n not in params.studies]
    if unknown:
        raise StageError(f"no study named {', '.join(unknown)} in params.yaml (expected one of "
                         f"{', '.join(params.studies)})")
    for name in names:
        run_study(Path.cwd(), raw, name, params.studies[name])


if __name__ == "__main__":
    # `dvc` from the same environment as this Python.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    run(main, usage=USAGE)
