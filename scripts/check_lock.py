"""`make check-lock`: do the committed results match the code and params that make them?

Each pipeline's stages are judged by `dvc status` against its lock file, every stage on its own, so every
stale one is named (a stage that cannot run for missing data is no error here): a stage whose only changes are
missing data (deps not in the workspace, cached outputs not in the cache: a fresh clone has neither) is current
as far as can be told, as `dvc repro --allow-missing` judges; any other change (code, params, a committed output
edited or missing) makes it stale. The quick study (dvc.yaml) must be current whole: a stage with no entry in
dvc.lock is stale too. The evidence (evidence/dvc.yaml) runs only when asked (`make evidence`), for hours: a stage
with no entry in evidence/dvc.lock has not been run yet (listed, allowed).

Usage: python -m scripts.check_lock
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from ruamel.yaml import YAML

from scripts.lanes import DVC
from stages.ground.errors import StageError
from stages.plumbing import paths
from stages.plumbing.cli import refuse, run

USAGE = "usage: python -m scripts.check_lock"
ROOT_DVC_YAML = Path("dvc.yaml")
ROOT_LOCK = Path("dvc.lock")
EVIDENCE_DVC_YAML = Path("evidence/dvc.yaml")
EVIDENCE_LOCK = Path("evidence/dvc.lock")
ROOT_FIX = "run 'make repro' and commit dvc.lock and reports/"
EVIDENCE_FIX = f"run `make evidence`, then commit reports/evidence and {EVIDENCE_LOCK}"
MISSING = "deleted"  # what `dvc status` says of a dep or out that is not in the workspace
NOT_IN_CACHE = "not in cache"  # what `dvc status` says of a cached out that is not in the cache either


def dvc(*args: str) -> subprocess.CompletedProcess:
    """A dvc command, its output captured."""
    return subprocess.run([*DVC, *args], capture_output=True, text=True, encoding="utf-8", check=False)


def locked_stages(lock: Path = EVIDENCE_LOCK) -> set[str]:
    """Names of the stages a lock file has an entry for (none when there is no lock yet)."""
    if not lock.is_file():
        return set()
    return set((YAML(typ="safe").load(lock) or {}).get("stages", {}))


def cached_out(pipeline: Path, stage: str, path: str) -> bool:
    """Whether ``path`` is an output DVC caches (the quick study's "out" in paths.OUTPUTS; the evidence's records
    are all committed)."""
    return pipeline == ROOT_DVC_YAML and (paths.stage_outputs(stage) or {}).get(Path(path)) == "out"


def missing_data(kind: str, what, cached: bool) -> bool:
    """Whether one change `dvc status` reports is data missing here rather than a change: a dep not in the
    workspace, or a ``cached`` output not in the workspace or the cache, which `dvc pull` brings. A committed
    output that is missing is not what the lock says."""
    if kind == "changed deps":
        return what == MISSING
    return kind == "changed outs" and cached and what in (MISSING, NOT_IN_CACHE)


def changes(pipeline: Path, stage: str, entries: list) -> list[tuple[str, str | None]]:
    """`dvc status --json`'s entries for one stage as text, one change each, like `params.yaml: evidence.grid
    modified` or `changed command`, each with the path when it is only missing data."""
    out = []
    for entry in entries:
        if isinstance(entry, str):
            out.append((entry, None))
            continue
        for kind, changed in entry.items():
            for path, what in changed.items():
                if isinstance(what, dict):
                    out += [(f"{path}: {key} {how}", None) for key, how in what.items()]
                else:
                    missing = missing_data(kind, what, cached_out(pipeline, stage, path))
                    out.append((f"{path} {what}", path if missing else None))
    return out


def classify(status: dict, locked: set[str], pipeline: Path = EVIDENCE_DVC_YAML) -> dict[str, dict[str, list[str]]]:
    """Each changed stage of ``pipeline`` (by its name in the lock) with its changes, under "not yet run" (no
    entry in the lock: every change), "missing data" (the missing files' paths) or "stale" (what changed, without
    the missing files)."""
    verdicts: dict[str, dict[str, list[str]]] = {"not yet run": {}, "missing data": {}, "stale": {}}
    for name, entries in status.items():
        stage = name.removeprefix(f"{pipeline.as_posix()}:")
        found = changes(pipeline, stage, entries)
        if stage not in locked:
            verdicts["not yet run"][stage] = [text for text, _ in found]
        elif all(missing for _, missing in found):
            verdicts["missing data"][stage] = sorted({missing for _, missing in found})
        else:
            verdicts["stale"][stage] = [text for text, missing in found if not missing]
    return verdicts


def status(pipeline: Path) -> dict:
    done = dvc("status", "--json", pipeline.as_posix())
    if done.returncode == 0:
        try:
            return json.loads(done.stdout)
        except ValueError:
            pass
    raise StageError(f"`dvc status {pipeline}` failed:\n{done.stdout}{done.stderr}".rstrip())


def judged(name: str, verdicts: dict[str, dict[str, list[str]]], allow_not_yet_run: bool) -> list[str]:
    """Prints one line per stage (``name``: the pipeline's) and one for those missing only data; returns the stale
    stages (with those never run, unless allowed)."""
    stale = dict(verdicts["stale"])
    for stage, what in verdicts["not yet run"].items():
        if allow_not_yet_run:
            print(f"{name}: {stage}: not yet run (allowed; `make evidence` runs it)")
        else:
            stale[stage] = ["never run (no entry in the lock)"]
    if verdicts["missing data"]:
        missing = sorted({path for what in verdicts["missing data"].values() for path in what})
        print(f"{name}: {len(verdicts['missing data'])} stage(s) current but for missing files "
              f"({few(missing)}; `dvc pull` brings them)")
    for stage, what in stale.items():
        print(f"{name}: {stage}: stale: {', '.join(what)}")
    return list(stale)


def few(items: list[str], shown: int = 6) -> str:
    """The first ``shown`` items, and how many more."""
    return ", ".join(items[:shown]) + (f" and {len(items) - shown} more" if len(items) > shown else "")


def stale_message(lock: Path, stale: list[str], fix: str) -> str:
    return f"{lock} is stale ({len(stale)} stage{'s' * (len(stale) != 1)}: {few(stale)}; listed above): {fix}"


def main(argv: list[str]) -> None:
    if argv:
        raise refuse(USAGE, argv)
    fixes = []
    for name, pipeline, lock, fix, allow_not_yet_run in (
            ("quick study", ROOT_DVC_YAML, ROOT_LOCK, ROOT_FIX, False),
            ("evidence", EVIDENCE_DVC_YAML, EVIDENCE_LOCK, EVIDENCE_FIX, True)):
        stale = judged(name, classify(status(pipeline), locked_stages(lock), pipeline), allow_not_yet_run)
        if stale:
            fixes.append(stale_message(lock, stale, fix))
    if fixes:
        raise StageError("\n".join(fixes))
    print("dvc.lock and evidence/dvc.lock match code and params")


if __name__ == "__main__":
    run(main, usage=USAGE)
