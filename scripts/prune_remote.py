"""`make prune-remote`: remove the partial files an upload cut short left on the default DVC remote.

DVC uploads each file to a folder or SSH remote under a temporary name (`.<22 characters>.tmp`, beside where it
goes) and renames it once whole; an upload cut short (a full disk, a lost connection, a killed worker) leaves that
file there for good. Only such files older than a day are removed (a younger one may be an upload under way on
another machine), and nothing else: no object, no run-cache entry, no file of another name.

Usage: python -m scripts.prune_remote [--dry-run]   (--dry-run lists them without removing)
"""

from __future__ import annotations

import re
import time
from urllib.parse import urlparse

from stages.ground.errors import StageError
from stages.plumbing.cli import refuse, run

USAGE = "usage: python -m scripts.prune_remote [--dry-run]"
PARTIAL = re.compile(r"\.[A-Za-z0-9_-]{22}\.tmp")  # dvc_objects' and dvc_ssh's tmp_fname()
MIN_AGE_S = 24 * 3600
MAX_ENTRIES = 1_000_000  # a remote of the evidence holds a few thousand objects
LISTABLE = ("", "file", "ssh")  # URL schemes of remotes whose files can be listed with their times


def partial_files(fs, root: str, now: float, max_entries: int = MAX_ENTRIES) -> tuple[list[str], bool]:
    """The partial uploads under ``root`` on ``fs`` older than MIN_AGE_S, and whether the walk stopped at
    ``max_entries`` entries before the end.

    Args:
        fs: the remote's filesystem (DVC's fsspec one: local folder or SSH).
        now: the time to age files against, in the remote's clock (seconds since the epoch).
    """
    found, seen = [], 0
    for folder, _, files in fs.walk(root, detail=True):
        for name, info in files.items():
            seen += 1
            if seen > max_entries:
                return found, True
            mtime = info.get("mtime")
            if PARTIAL.fullmatch(name) and info.get("type") == "file" and isinstance(mtime, (int, float)) \
                    and now - mtime > MIN_AGE_S:
                found.append(fs.join(folder, name))
    return found, False


def main(argv: list[str]) -> None:
    if argv not in ([], ["--dry-run"]):
        raise refuse(USAGE, argv)
    from dvc.repo import Repo

    with Repo(".") as repo:
        name = repo.config["core"].get("remote")
        if not name:
            raise StageError("no default DVC remote: nothing to prune")
        url = repo.config["remote"][name]["url"]
        if urlparse(url).scheme not in LISTABLE:
            raise StageError(f"remote {name!r} ({url}) is neither a folder nor SSH: remove its partial uploads "
                             "(.<22 characters>.tmp) with that storage's own tools")
        remote = repo.cloud.get_remote(name)
        found, cut = partial_files(remote.fs, remote.path, time.time())
        if not argv:
            for path in found:
                remote.fs.remove(path)
    listed = [f"  {path}" for path in found[:20]] + ([f"  and {len(found) - 20} more"] if len(found) > 20 else [])
    if cut:
        listed.append(f"looked at the first {MAX_ENTRIES:,} files of the remote only")
    print("\n".join([f"prune-remote: {'would remove' if argv else 'removed'} {len(found)} partial upload(s) older "
                     f"than a day from remote {name!r}", *listed]))

if __name__ == "__main__":
    run(main, usage=USAGE)
