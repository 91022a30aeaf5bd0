"""`make check-lock`: do the committed results match the code and params that make them?

The quick study (dvc.yaml) must be current: `dvc repro --dry --allow-missing` runs nothing (missing data,
as in a fresh clone, is allowed; its hashes are in dvc.lock).

The evidence (evidence/dvc.yaml) runs only when asked (`make evidence`), for hours, so each stage `dvc status`
reports is judged by evidence/dvc.lock: a stage with no entry there has not been run yet (listed, allowed); an
entry whose only changes are missing deps (a fresh clone has no data/prepared, which DVC caches) is current as
far as can be told, as `--allow-missing` judges; any other change (code, params, a record edited, or missing:
records are committed, not cached) makes the entry stale: the committed evidence is not what the code and
params now make.

Usage: python -m scripts.check_lock
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from ruamel.yaml import YAML

from scripts.lanes import DVC
from stages.plumbing.cli import run
from stages.plumbing.errors import StageError

USAGE = "usage: python -m scripts.check_lock"
EVIDENCE_DVC_YAML = Path("evidence/dvc.yaml")
EVIDENCE_LOCK = Path("evidence/dvc.lock")
ROOT_FIX = "dvc.lock is stale: run 'make repro' and commit dvc.lock and reports/"
EVIDENCE_FIX = f"{EVIDENCE_LOCK} is stale: run `make evidence`, then commit reports/evidence and {EVIDENCE_LOCK}"
MISSING = "deleted"  # what `dvc status` says of a dep or out that is not in the workspace


def dvc(*args: str) -> subprocess.CompletedProcess:
    """A dvc command, its output captured."""
    return subprocess.run([*DVC, *args], capture_output=True, text=True, encoding="utf-8", check=False)


def root_current() -> bool:
    done = dvc("repro", "--dry", "--allow-missing")
    current = done.returncode == 0 and "Running stage" not in done.stdout + done.stderr
    if not current:
        print(done.stdout + done.stderr, end="")
    return current


def locked_stages(lock: Path = EVIDENCE_LOCK) -> set[str]:
    """Names of the stages evidence/dvc.lock has an entry for (none when there is no lock yet)."""
    if not lock.is_file():
        return set()
    return set((YAML(typ="safe").load(lock) or {}).get("stages", {}))


def changes(entries: list) -> list[str]:
    """`dvc status --json`'s entries for one stage as text, one change each, like `params.yaml: evidence.grid
    modified` or `changed command`."""
    out = []
    for entry in entries:
        if isinstance(entry, str):
            out.append(entry)
            continue
        for paths in entry.values():
            for path, what in paths.items():
                out += ([f"{path}: {key} {how}" for key, how in what.items()] if isinstance(what, dict)
                        else [f"{path} {what}"])
    return out


def only_missing_deps(entries: list) -> bool:
    """Whether every change is a dep missing from the workspace (nothing was edited, every output is there)."""
    return all(isinstance(entry, dict) and set(entry) == {"changed deps"}
               and all(what == MISSING for what in entry["changed deps"].values()) for entry in entries)


def classify(status: dict, locked: set[str]) -> dict[str, dict[str, list[str]]]:
    """Each changed evidence stage (by its name in evidence/dvc.lock) with its changes, under "not yet run",
    "missing data" or "stale"."""
    verdicts: dict[str, dict[str, list[str]]] = {"not yet run": {}, "missing data": {}, "stale": {}}
    for name, entries in status.items():
        stage = name.removeprefix(f"{EVIDENCE_DVC_YAML.as_posix()}:")
        verdict = "not yet run" if stage not in locked else "missing data" if only_missing_deps(entries) else "stale"
        verdicts[verdict][stage] = changes(entries)
    return verdicts


def evidence_current() -> bool:
    done = dvc("status", "--json", EVIDENCE_DVC_YAML.as_posix())
    if done.returncode != 0:
        raise StageError(f"`dvc status {EVIDENCE_DVC_YAML}` failed:\n{done.stdout}{done.stderr}".rstrip())
    verdicts = classify(json.loads(done.stdout), locked_stages())
    for stage in verdicts["not yet run"]:
        print(f"evidence: {stage}: not yet run (allowed; `make evidence` runs it)")
    if verdicts["missing data"]:
        missing = sorted({change for what in verdicts["missing data"].values() for change in what})
        print(f"evidence: {len(verdicts['missing data'])} stage(s) current but for missing files "
              f"({', '.join(missing)}; `dvc pull` brings them)")
    for stage, what in verdicts["stale"].items():
        print(f"evidence: {stage}: stale: {', '.join(what)}")
    return not verdicts["stale"]


def main(argv: list[str]) -> None:
    if argv:
        raise StageError(f"{USAGE} (got {' '.join(argv)})")
    fixes = [fix for current, fix in ((root_current(), ROOT_FIX), (evidence_current(), EVIDENCE_FIX)) if not current]
    if fixes:
        raise StageError("\n".join(fixes))
    print("dvc.lock and evidence/dvc.lock match code and params")


if __name__ == "__main__":
    run(main, usage=USAGE)
