"""What earlier stages wrote, read back and checked before use.

A JSON or CSV file that is damaged, edited by hand or written by another version of this
code becomes one StageError naming the file, what is wrong in it and the command that
rebuilds it, instead of a KeyError or TypeError somewhere later. Each record's shape is declared
once, in stages.lib.shapes, in the notation of stages.ground.spec. Its writer checks it (write_json) and its
readers check what they read (read), all of it or the part they use. JSON holds no NaN or infinity, so a file
with one is damaged whatever the reader needs. Reading lives a floor above the notation because its messages
name the stage that rebuilds a file (stages.plumbing.paths).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Callable

from stages.ground import atomic
from stages.ground.errors import StageError
from stages.ground.spec import Wrong, all_finite, check
from stages.plumbing import paths


def read_json(path: Path, fix: str | None = None) -> dict:
    """A JSON file an earlier stage wrote; a missing or damaged one says how to get it back (``fix``, if given)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StageError(f"{path} is missing: {fix or 'restore it with `dvc checkout` or rebuild it with `dvc repro`'}"
                         ) from None
    except json.JSONDecodeError as err:
        raise StageError(f"{path} is not valid JSON ({err}): "
                         f"{fix or 'rebuild it with `dvc repro -f` on the stage that writes it'}") from None



def read(path: Path, spec: Any, fix: str | None = None) -> Any:
    """The JSON file at ``path``, checked against ``spec``, or StageError saying how to rebuild it (``fix``, else
    the command that reruns the stage that writes it)."""
    try:
        data = read_json(path, fix)  # a missing file or invalid JSON: read_json's own message
        all_finite(data, "")
        check(data, spec, "")
    except UnicodeDecodeError as err:
        raise damaged(path, f"not UTF-8 text ({err.reason} at byte {err.start})", fix) from None
    except RecursionError:
        raise damaged(path, "nested too deeply to be one of this pipeline's files", fix) from None
    except Wrong as err:
        raise damaged(path, str(err), fix) from None
    return data


def write_json(path: Path, record: Any, spec: Any) -> None:
    """Write ``record`` (atomic.write_json) once it has the shape ``spec`` (stages.lib.shapes) declares: a writer
    that drifts from its declaration fails here, in its own stage, not in a reader later."""
    try:
        check(record, spec, "")
    except Wrong as err:
        raise ValueError(f"{path}: not the record its shape declares: {err}") from None
    atomic.write_json(path, record)


def read_csv(path: Path, columns: dict[str, Callable[[str], Any]], min_rows: int = 1) -> list[dict[str, Any]]:
    """The rows of a CSV file an earlier stage wrote: ``columns`` maps each column used to int or float
    (float takes nan and inf, which a diverged training writes). StageError if anything does not fit."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [name for name in columns if name not in (reader.fieldnames or [])]
            if missing:
                raise Wrong(f"its header {reader.fieldnames or []} has no column {', '.join(missing)}")
            rows = [_row(row, columns, line) for line, row in enumerate(reader, start=2)]
    except UnicodeDecodeError as err:
        raise damaged(path, f"not UTF-8 text ({err.reason} at byte {err.start})") from None
    except csv.Error as err:
        raise damaged(path, f"not CSV ({err})") from None
    except Wrong as err:
        raise damaged(path, str(err)) from None
    if len(rows) < min_rows:
        raise damaged(path, f"has {len(rows)} rows (expected at least {min_rows})")
    return rows


def damaged(path: Path, what: str, fix: str | None = None) -> StageError:
    """The one-line error for a file a reader cannot use.

    Args:
        what: what is wrong with it.
        fix: what gets it back; by default, the command that reruns the stage that writes it.
    """
    return StageError(f"{path}: {what}: the file is damaged or was not written by this pipeline; "
                      f"{fix or 'rebuild it with ' + rebuild_command(path)}")


def rebuild_command(path: Path) -> str:
    """What rebuilds ``path``: the stage that writes it."""
    stage = paths.writer(path)
    return f"`dvc repro -f {stage}`" if stage else "`dvc repro -f` on the stage that writes it"


def _row(row: dict, columns: dict[str, Callable[[str], Any]], line: int) -> dict[str, Any]:
    out = {}
    for name, convert in columns.items():
        text = row.get(name)
        if text is None:
            raise Wrong(f"line {line} has no value in column {name}")
        try:
            out[name] = convert(text)
        except ValueError:
            raise Wrong(f"line {line}, column {name} is {text!r}, not {'an integer' if convert is int else 'a number'}")
    return out


