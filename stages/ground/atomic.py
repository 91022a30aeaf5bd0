"""Write outputs so an interrupted stage leaves the old file or none, never half a file."""

from __future__ import annotations

import csv
import glob
import io
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from stages.ground.errors import RESOURCE_ERRNOS

# mkstemp/mkdtemp create owner-only entries; outputs should get the usual permissions.
_UMASK = os.umask(0)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK
DIR_MODE = 0o777 & ~_UMASK
_written: list[Path] = []  # outputs this process has replaced, for an interrupted stage's message


def written_paths() -> list[Path]:
    """Outputs this process has replaced and that are still there: a file written inside a temporary
    folder that was then thrown away (an interrupted atomic_dir) is not one."""
    return [path for path in dict.fromkeys(_written) if path.exists()]


@contextmanager
def naming_the_output(path: Path) -> Iterator[None]:
    """A disk-full or permission error while writing ``path`` names ``path``, the output a user knows,
    rather than a temporary file beside it or nothing (a failed write() has no file name)."""
    try:
        yield
    except OSError as err:
        if err.errno in RESOURCE_ERRNOS and (err.filename is None or _is_temporary_of(Path(err.filename), path)):
            err.filename = str(path)
        raise


def _is_temporary_of(where: Path, path: Path) -> bool:
    """Whether ``where`` is a temporary sibling of ``path`` (.<name>.XXXX.tmp) or inside one."""
    try:  # tempfile may return absolute paths for a relative ``path``
        first = Path(os.path.abspath(where)).relative_to(os.path.abspath(path.parent)).parts[0]
    except (ValueError, IndexError):
        return False
    return first.startswith(f".{path.name}.")


def remove_leftovers(path: Path) -> None:
    """Temporary files and folders an earlier write of ``path`` left when it was killed (SIGKILL,
    power loss: no cleanup ran). Only one stage writes a given output at a time: DVC locks the repo."""
    for leftover in path.parent.glob(f".{glob.escape(path.name)}.*"):
        if leftover.name.endswith((".tmp", ".old")):
            shutil.rmtree(leftover) if leftover.is_dir() and not leftover.is_symlink() else leftover.unlink()


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place only on success."""
    path = Path(path)
    with naming_the_output(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_leftovers(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        tmp = Path(tmp)
        try:
            yield tmp
            os.chmod(tmp, FILE_MODE)
            os.replace(tmp, path)
            _written.append(path)
        finally:
            tmp.unlink(missing_ok=True)


@contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; it replaces ``path`` only on success."""
    path = Path(path)
    with naming_the_output(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_leftovers(path)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
        try:
            yield tmp
            os.chmod(tmp, DIR_MODE)
            # Move the old folder aside before the new one goes in: deleting it first could be
            # interrupted half-way and leave a partial folder in place.
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
            if path.exists():
                os.replace(path, old / path.name)
            try:
                os.replace(tmp, path)
                _written.append(path)
            except BaseException:
                if (old / path.name).exists():
                    os.replace(old / path.name, path)
                raise
            finally:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: object) -> None:
    """Valid JSON only: a NaN or infinity (which json.dumps would write as a bare NaN) is a bug upstream."""
    try:
        text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=False)
    except ValueError as err:
        raise ValueError(f"{path}: not written: {err}") from None
    write_text(path, text + "\n")


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    write_text(path, buf.getvalue())
