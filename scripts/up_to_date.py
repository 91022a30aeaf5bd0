"""A `make repro` with nothing to do, answered without DVC.

DVC reads every pipeline and lock of the repo before it can say "up to date" (2.5 s here, most of it parsing
evidence/dvc.lock's 19,000 lines). Once DVC has said so, lanes records the status of every file DVC looked at
for those targets: the pipelines, their locks, params.yaml, and each dep and out of the planned stages, folders
walked whole. While each is still there with the same size, inode, mtime and ctime, nothing DVC compares can
have changed, and lanes answers at once. Any write or rename sets a file's ctime to now, which no tool can set
back; DVC's own hash cache (.dvc/tmp) trusts less: inode, mtime and size.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Iterable

STAMP = Path(".dvc/tmp/lanes-up-to-date.json")  # DVC's tmp folder: git-ignored, never shared
MAX_STAMP_BYTES = 16 * 1024 * 1024  # far above the evidence's few thousand files; a bigger one is not ours
MAX_FILES = 100_000  # a walk past this many files is not worth recording: DVC is asked instead
ALWAYS = ("params.yaml", "dvc.yaml", "dvc.lock", "evidence/dvc.yaml", "evidence/dvc.lock")


def status_of(paths: Iterable[str]) -> dict[str, list[int]] | None:
    """Size, inode, mtime and ctime of each path, and of every file and folder under the folders among them;
    a path that is not there is recorded as missing ([]). None past MAX_FILES entries."""
    found: dict[str, list[int]] = {}

    def add(path: str) -> None:
        try:
            st = os.stat(path, follow_symlinks=False)
        except OSError:
            found[path] = []
            return
        found[path] = [st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns]

    for path in paths:
        add(path)
        if os.path.isdir(path) and not os.path.islink(path):
            for folder, subfolders, files in os.walk(path):
                subfolders.sort()
                for name in [*subfolders, *sorted(files)]:
                    add(os.path.join(folder, name))
                if len(found) > MAX_FILES:
                    return None
    return found


def key(targets: list[str]) -> dict:
    """What a recorded status answers for: these targets, under this interpreter (one venv's DVC)."""
    return {"targets": targets, "python": sys.executable}


def record(targets: list[str], paths: Iterable[str], stamp: Path = STAMP) -> None:
    """After DVC found nothing to do for ``targets``: the status of ``paths`` (each planned stage's deps,
    outs and pipeline files), ALWAYS's files included."""
    status = status_of(sorted({*ALWAYS, *paths}))
    if status is None:
        stamp.unlink(missing_ok=True)
        return
    stamp.parent.mkdir(parents=True, exist_ok=True)
    temporary = stamp.with_name(f".{stamp.name}.tmp")
    temporary.write_text(json.dumps({**key(targets), "files": status}), encoding="utf-8")
    os.replace(temporary, stamp)


def unchanged(targets: list[str], stamp: Path = STAMP) -> bool:
    """Whether nothing has changed since DVC last found nothing to do for ``targets`` here."""
    try:
        if stamp.stat().st_size > MAX_STAMP_BYTES:
            return False
        recorded = json.loads(stamp.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(recorded, dict) or {k: recorded.get(k) for k in key(targets)} != key(targets):
        return False
    files = recorded.get("files")
    return isinstance(files, dict) and bool(files) and status_of(files) == files

