"""The notation for a record's shape, and the check that a value has it.

A spec is a dict (these keys, each of this shape; a key ending in "?" may be absent, other keys are ignored),
ListOf, MapOf, Maybe, OneOf or a Scalar. stages.lib.shapes declares each record's shape in it, once;
stages.plumbing.records reads and writes records against those shapes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


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


def all_finite(value: Any, where: str) -> None:
    """Python's json reads NaN and Infinity, which no stage writes (atomic.write_json refuses them)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise Wrong(f"{where or 'the whole file'} is {value}, which is not a JSON number")
    if isinstance(value, dict):
        for key, item in value.items():
            all_finite(item, _join(where, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            all_finite(item, f"{where}[{i}]")


def _join(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
