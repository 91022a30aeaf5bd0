"""What earlier stages wrote, read back and checked before use.

A JSON or CSV file that is damaged, edited by hand or written by another version of this
code becomes one StageError naming the file, what is wrong in it and the command that
rebuilds it, instead of a KeyError or TypeError somewhere later. Each record's shape is declared
once, in stages.lib.shapes, as a spec: a dict (these keys, each of this shape; a key ending in "?"
may be absent, other keys are ignored), ListOf, MapOf, Maybe, OneOf or a Scalar. Its writer checks
it (write_json) and its readers check what they read (read), all of it or the part they use.
JSON holds no NaN or infinity, so a file with one is damaged whatever the reader needs.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from stages.plumbing import atomic, paths
from stages.plumbing.cli import read_json
from stages.plumbing.errors import StageError


@dataclass(frozen=True)
class Scalar:
    types: tuple[type, ...]
    name: str  # for messages, e.g. "a number"
    positive: bool = False
    low: float | None = None  # the smallest value allowed (None: no bound)
    high: float | None = None


@dataclass(frozen=True)
class Maybe:
    """null, or a value of ``spec``."""
    spec: Any


@dataclass(frozen=True)
class ListOf:
    item: Any
    min_len: int = 0
    max_len: int | None = None


@dataclass(frozen=True)
class MapOf:
    """A mapping with any keys, every value of one spec."""
    value: Any


@dataclass(frozen=True)
class OneOf:
    options: tuple
    name: str  # for messages, e.g. "a pick {lr, step} or {error}"


ANY = Scalar((object,), "anything")
NUMBER = Scalar((int, float), "a number")
POSITIVE = Scalar((int, float), "a positive number", positive=True)
INT = Scalar((int,), "an integer")
# What a record's numbers mean bounds them: a record holding an accuracy of 98.3 (a percent where a fraction
# belongs), a negative time or 0 epochs is refused on read, with its file and field, not rendered.
FRACTION = Scalar((int, float), "a fraction from 0 to 1", low=0, high=1)
NONNEGATIVE = Scalar((int, float), "a number >= 0", low=0)
COUNT = Scalar((int,), "an integer >= 1", low=1)
INDEX = Scalar((int,), "an integer >= 0", low=0)
STR = Scalar((str,), "a string")
NULL = Scalar((type(None),), "null")
# A rate the range test picked, or why its rule could not pick one (lr_finder.suggest_all).
PICK = OneOf(({"lr": POSITIVE, "step": INT}, {"error": STR}), "a pick {lr, step} or {error}")


class Wrong(Exception):
    """Where in a file, and what is wrong there."""


def read(path: Path, spec: Any, fix: str | None = None) -> Any:
    """The JSON file at ``path``, checked against ``spec``, or StageError saying how to rebuild it (``fix``, else
    the command that reruns the stage that writes it)."""
    try:
        data = read_json(path, fix)  # a missing file or invalid JSON: cli.read_json's own message
        _all_finite(data, "")
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


def check(value: Any, spec: Any, where: str) -> None:
    """Raise Wrong if ``value`` (found at ``where``) does not have the shape ``spec`` describes."""
    if isinstance(spec, Maybe):
        if value is not None:
            check(value, spec.spec, where)
    elif isinstance(spec, Scalar):
        _check_scalar(value, spec, where)
    elif isinstance(spec, dict):
        _check_mapping(value, where)
        for key, item_spec in spec.items():
            name = key.rstrip("?")
            if name in value:
                check(value[name], item_spec, _join(where, name))
            elif not key.endswith("?"):
                raise Wrong(f"{_join(where, name)} is missing")
    elif isinstance(spec, ListOf):
        if not isinstance(value, list):
            raise Wrong(f"{where or 'the whole file'} is {_short(value)}, not a list")
        if len(value) < spec.min_len or (spec.max_len is not None and len(value) > spec.max_len):
            expected = spec.min_len if spec.max_len == spec.min_len else (
                f"at least {spec.min_len}" if spec.max_len is None else f"{spec.min_len} to {spec.max_len}")
            raise Wrong(f"{where or 'the whole file'} has {len(value)} entries (expected {expected})")
        for i, item in enumerate(value):
            check(item, spec.item, f"{where}[{i}]")
    elif isinstance(spec, MapOf):
        _check_mapping(value, where)
        for key, item in value.items():
            check(item, spec.value, _join(where, key))
    elif isinstance(spec, OneOf):
        for option in spec.options:
            try:
                check(value, option, where)
                return
            except Wrong:
                continue
        raise Wrong(f"{where or 'the whole file'} is {_short(value)}, not {spec.name}")
    else:
        raise TypeError(f"not a spec: {spec!r}")


def _check_scalar(value: Any, spec: Scalar, where: str) -> None:
    if spec is ANY:
        return
    is_bool = isinstance(value, bool) and bool not in spec.types
    if is_bool or not isinstance(value, spec.types) or (spec.positive and not value > 0) or (
            spec.low is not None and not value >= spec.low) or (spec.high is not None and not value <= spec.high):
        raise Wrong(f"{where or 'the whole file'} is {_short(value)}, not {spec.name}")


def _check_mapping(value: Any, where: str) -> None:
    if not isinstance(value, dict):
        raise Wrong(f"{where or 'the whole file'} is {_short(value)}, not a mapping")


def _all_finite(value: Any, where: str) -> None:
    """Python's json reads NaN and Infinity, which no stage writes (atomic.write_json refuses them)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise Wrong(f"{where or 'the whole file'} is {value}, which is not a JSON number")
    if isinstance(value, dict):
        for key, item in value.items():
            _all_finite(item, _join(where, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _all_finite(item, f"{where}[{i}]")


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


def _join(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
