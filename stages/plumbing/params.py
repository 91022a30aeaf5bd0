"""Read and validate params.yaml: the one place that reads it (its meaning: stages.lib.schema).

Runs before TensorFlow is imported, so a typo costs a fraction of a second, and
reports every problem at once as
``params.yaml: <key>: <what is wrong> (got <value>; expected <allowed>)``.

The file is read as YAML 1.2 with ruamel.yaml's safe loader, as DVC reads it for
`dvc params diff` and `dvc exp run -S`: `lr: 1e-3` is a number and `yes` a string
(PyYAML, YAML 1.1, reads them the other way round), so the stages and DVC agree.
"""

from __future__ import annotations

import difflib
import io
import math
import re
from dataclasses import MISSING
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, SequenceNode

from stages.ground.errors import MAX_SHOWN, shown
from stages.lib.idx import IDX_FILES
from stages.lib.lr_finder import RULES
from stages.lib.schema import (
    GRID_NEIGHBOURHOOD,
    MAX_HIDDEN_LAYERS,
    MAX_LIST,
    MAX_NAME_LENGTH,
    MAX_PARAMS,
    MAX_SEED,
    SOURCE_KINDS,
    Arch,
    Choice,
    ComputeParams,
    DataParams,
    EvidenceParams,
    LongRulesParams,
    LrRangeParams,
    Params,
    ParamsError,
    Range,
    ReportParams,
    Source,
    TrainParams,
    count_params,
    fields_of,
    keys,
)

PARAMS_FILE = Path("params.yaml")
# What a params file may be, far beyond any study's (this one's is 4 KB and some 200 YAML nodes): a bigger file, or
# aliases that expand it past MAX_NODES, is refused by name at once instead of parsed for minutes or out of memory.
MAX_BYTES = 256 * 1024
MAX_NODES = 100_000
# Names become file names and scope names: no leading "-" (command lines would read an option) and no leading "_"
# (Keras refuses it as a model's scope name, DVC as a stage's).
ARCH_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
SHA256 = re.compile(r"[0-9a-f]{64}")
# The names a param allows when they are defined outside the schema (schema.param(allowed="rule")).
CHOICES = {"rule": Choice(tuple(RULES))}


class _Checker:
    """Collects problems while reading a nested mapping."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def fail(self, key: str, what: str, got: Any, expected: str) -> None:
        self.problems.append(f"params.yaml: {escaped(key)}: {what} (got {shown(got)}; expected {expected})")

    def section(self, parent: dict, key: str, known: tuple[str, ...], path: str = "") -> dict | None:
        """The section ``key`` of ``parent`` (found at ``path``), or None (reported) when it is missing or
        not a mapping."""
        full = f"{path}.{key}" if path else key
        if key not in parent:
            self.fail(full, "missing section", None, f"a mapping with keys {', '.join(known)}")
            return None
        value = parent[key]
        if not isinstance(value, dict):
            self.fail(full, "not a mapping", value, f"a mapping with keys {', '.join(known)}")
            return None
        self.unknown_keys(value, full, known)
        return value

    def unknown_keys(self, mapping: dict, path: str, known: tuple[str, ...]) -> None:
        for key in mapping:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"one of {', '.join(known)}"
                self.fail(f"{path}.{key}" if path else str(key), "unknown key", key, hint)

    def safe_name(self, name: Any, path: str, kind: str) -> bool:
        """Names become file and folder names: letters, digits, _ and - only, short enough for any file system."""
        if not (isinstance(name, str) and ARCH_NAME.fullmatch(name)):
            self.fail(path, f"unsafe {kind} name", name,
                      "letters, digits, _ and - only, starting with a letter or digit")
            return False
        if len(name) > MAX_NAME_LENGTH:
            self.fail(path, f"{kind} name too long for file names", len(name), f"at most {MAX_NAME_LENGTH} characters")
            return False
        return True

    def number(self, mapping: dict, key: str, path: str, *, integer: bool, low: float,
               low_open: bool = False, high: float | None = None, high_open: bool = True,
               default: Any = ..., ) -> Any:
        """``mapping[key]`` once it is a number in range, else None (reported).

        Args:
            path: where ``mapping`` sits in params.yaml (``archs.base``), for messages.
            integer: whether only whole numbers are allowed (a bool never is).
            low, high: the range's ends (``high`` None: no upper end).
            low_open, high_open: whether that end is excluded.
            default: what a missing key gives; none given, a missing key is reported.
        """
        full = f"{path}.{key}" if path else key
        if key not in mapping:
            if default is not ...:
                return default
            self.fail(full, "missing", None, self._range_text(integer, low, low_open, high, high_open))
            return None
        value = mapping[key]
        kind_ok = isinstance(value, int) if integer else isinstance(value, (int, float))
        if isinstance(value, bool) or not kind_ok:
            self.fail(full, "wrong type", value, self._range_text(integer, low, low_open, high, high_open))
            return None
        too_low = value <= low if low_open else value < low
        too_high = high is not None and (value >= high if high_open else value > high)
        if too_low or too_high or not math.isfinite(value):
            self.fail(full, "out of range", value, self._range_text(integer, low, low_open, high, high_open))
            return None
        return value if integer else float(value)

    @staticmethod
    def _range_text(integer: bool, low: float, low_open: bool, high: float | None, high_open: bool) -> str:
        kind = "an integer" if integer else "a number"
        text = f"{kind} {'>' if low_open else '>='} {low:g}"
        if high is not None:
            text += f" and {'<' if high_open else '<='} {high:g}"
        return text

    def choice(self, mapping: dict, key: str, path: str, allowed: tuple[str, ...], default: Any = ...) -> Any:
        """``mapping[key]`` once it is one of ``allowed``, else None (reported); ``path`` and ``default`` as
        number's."""
        full = f"{path}.{key}" if path else key
        if key not in mapping:
            if default is not ...:
                return default
            self.fail(full, "missing", None, f"one of {', '.join(allowed)}")
            return None
        value = mapping[key]
        if value not in allowed:
            self.fail(full, "unknown value", value, f"one of {', '.join(allowed)}")
            return None
        return value


    def declared(self, mapping: dict, cls: type, path: str) -> dict[str, Any]:
        """Every key of ``cls`` that the schema gives a Range or a Choice (its own or from CHOICES), read from
        ``mapping`` (found at ``path``) and checked; a missing one takes its default, if it has one."""
        values = {}
        for f in fields_of(cls):
            allowed = CHOICES.get(f.metadata["allowed"], f.metadata["allowed"])
            default = ... if f.default is MISSING else f.default
            if isinstance(allowed, Range):
                values[f.name] = self.number(mapping, f.name, path, integer=allowed.integer, low=allowed.low,
                                             low_open=allowed.low_open, high=allowed.high,
                                             high_open=allowed.high_open, default=default)
            elif isinstance(allowed, Choice):
                values[f.name] = self.choice(mapping, f.name, path, allowed.names, default=default)
        return values


def escaped(key: str) -> str:
    """A key path as a message names it: past ASCII escaped, cut as shown() cuts a value."""
    text = key.encode("ascii", "backslashreplace").decode("ascii")
    return text if len(text) <= 2 * MAX_SHOWN else text[:2 * MAX_SHOWN - 1] + "…"


def described(value: Any) -> str:
    """What a value is, without quoting it: for a whole file that is not a mapping, whatever it holds."""
    if isinstance(value, str):
        return f"a string of {len(value):,} characters"
    if isinstance(value, list):
        return f"a list of {len(value):,} items"
    return "nothing" if value is None else f"a {type(value).__name__}"


def parse_params(raw: Any) -> Params:
    """Validate the parsed YAML; raise ParamsError listing every problem."""
    c = _Checker()
    if not isinstance(raw, dict):
        c.problems.append(f"params.yaml: (top level): not a mapping (got {described(raw)}; expected a mapping with "
                          f"sections {', '.join(keys(Params))})")
        raise ParamsError(c.problems)
    c.unknown_keys(raw, "", keys(Params))
    seed = c.declared(raw, Params, "")["seed"]
    d = c.section(raw, "data", keys(DataParams))
    data = DataParams(**c.declared(d, DataParams, "data"), sources=_sources(c, d.get("sources")),
                      sha256=_sha256(c, d.get("sha256"))) if d is not None else None
    lr_range, train, compute, report = (_simple(c, raw, name, cls) for name, cls in (
        ("lr_range", LrRangeParams), ("train", TrainParams), ("compute", ComputeParams), ("report", ReportParams)))
    archs = _archs(c, raw.get("archs"))
    evidence = _evidence(c, raw)
    if seed is not None and train is not None and train.repeats is not None and seed + train.repeats - 1 > MAX_SEED:
        c.fail("seed", "too large for train.repeats seeds after it", seed,
               f"at most {MAX_SEED} - (train.repeats - 1) = {MAX_SEED - train.repeats + 1}")
    if c.problems:
        raise ParamsError(c.problems)
    return Params(seed=seed, data=data, lr_range=lr_range, train=train, compute=compute, report=report,
                  evidence=evidence, archs=archs)


def _simple(c: _Checker, raw: dict, name: str, cls: type) -> Any:
    """A section whose every key the schema gives a Range or a Choice."""
    section = c.section(raw, name, keys(cls))
    return cls(**c.declared(section, cls, name)) if section is not None else None


def _evidence(c: _Checker, raw: dict) -> EvidenceParams | None:
    e = c.section(raw, "evidence", keys(EvidenceParams))
    if e is None:
        return None
    lr = c.section(e, "long_rules", keys(LongRulesParams), path="evidence")
    long_rules = None
    if lr is not None:
        arch = lr.get("arch")
        # The names archs lists, valid or not: a mistake in an arch is its own one line, not also this one.
        names = [str(name) for name in raw["archs"]] if isinstance(raw.get("archs"), dict) else []
        if names and not (isinstance(arch, str) and arch in names):
            c.fail("evidence.long_rules.arch", "not an architecture of archs", arch, f"one of {', '.join(names)}")
        allowed = (*RULES, *GRID_NEIGHBOURHOOD)
        rates = lr.get("rates")
        if not (isinstance(rates, list) and rates and all(r in allowed for r in rates)
                and len(set(rates)) == len(rates)):
            c.fail("evidence.long_rules.rates", "not a list of distinct rate sources", rates,
                   f"a non-empty list of {', '.join(allowed)}")
        long_rules = LongRulesParams(arch=arch, seeds=_seeds(c, lr.get("seeds"), "evidence.long_rules.seeds"),
                                     rates=tuple(rates) if isinstance(rates, list) else ())
    seeds = _seeds(c, e.get("seeds"), "evidence.seeds")
    shared = sorted(set(long_rules.seeds) & set(seeds)) if long_rules else []
    if shared:  # long_rules at the arch's own rule would train long@<arch>'s very runs again
        c.fail("evidence.long_rules.seeds", "shares seeds with evidence.seeds", shared,
               "seeds evidence.seeds does not list, so that no run is trained twice")
    heldout = _archs(c, e.get("heldout"), "evidence.heldout")
    if heldout:
        taken = [name for name in heldout if isinstance(raw.get("archs"), dict) and name in raw["archs"]]
        for name in taken:  # their records would share a folder
            c.fail(f"evidence.heldout.{name}", "also an architecture of archs", name, "a name archs does not use")
    return EvidenceParams(
        seeds=seeds,
        range_seeds=_seeds(c, e.get("range_seeds"), "evidence.range_seeds"),
        grid=_rates(c, e.get("grid"), "evidence.grid"),
        long_rules=long_rules,
        heldout=heldout,
        **c.declared(e, EvidenceParams, "evidence"),
    )


def _seeds(c: _Checker, value: Any, key: str) -> tuple[int, ...]:
    """Distinct seeds, each one numpy's and TensorFlow's generators accept."""
    # Types first: a list or mapping among the values cannot go into the set below.
    if not (isinstance(value, list) and 0 < len(value) <= MAX_LIST and all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_SEED for v in value)
            and len(set(value)) == len(value)):
        c.fail(key, "not a list of distinct seeds", value,
               f"a list of 1 to {MAX_LIST} distinct integers 0 to {MAX_SEED}")
        return ()
    return tuple(value)


def _rates(c: _Checker, value: Any, key: str) -> tuple[float, ...]:
    if not isinstance(value, list) or not 0 < len(value) <= MAX_LIST or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < math.inf for v in value
    ) or len(set(value)) != len(value):
        c.fail(key, "not a list of distinct positive rates", value,
               f"a list of 1 to {MAX_LIST} distinct numbers > 0, like [0.05, 0.1]")
        return ()
    return tuple(float(v) for v in value)


def _sources(c: _Checker, value: Any) -> tuple[Source, ...]:
    expected = "a non-empty list of {url: ...}, {npm: ...} or {local: ...} entries"
    if not isinstance(value, list) or not value:
        c.fail("data.sources", "missing or empty" if not value else "not a list", value, expected)
        return ()
    sources = []
    for i, entry in enumerate(value):
        path = f"data.sources[{i}]"
        kinds = [k for k in SOURCE_KINDS if isinstance(entry, dict) and k in entry]
        if len(kinds) != 1:
            c.fail(path, "needs exactly one of url, npm, local", entry, expected)
            continue
        kind = kinds[0]
        c.unknown_keys(entry, path, (kind, "sha256") if kind == "url" else (kind,))
        location = entry[kind]
        if not isinstance(location, str) or not location.strip():
            c.fail(f"{path}.{kind}", "not a non-empty string", location, "a URL, an npm package spec or a path")
            continue
        if kind == "url" and not location.startswith(("http://", "https://")):
            c.fail(f"{path}.url", "not an http(s) URL", location, "http://... or https://...")
            continue
        digest = entry.get("sha256")
        if digest is not None and not (isinstance(digest, str) and SHA256.fullmatch(digest)):
            c.fail(f"{path}.sha256", "not a sha256 digest", digest, "64 lowercase hex characters")
            continue
        sources.append(Source(kind, location, digest))
    return tuple(sources)


def _sha256(c: _Checker, value: Any) -> dict[str, str]:
    expected = f"a mapping of {', '.join(IDX_FILES)} to sha256 digests"
    if not isinstance(value, dict):
        c.fail("data.sha256", "missing or not a mapping", value, expected)
        return {}
    c.unknown_keys(value, "data.sha256", IDX_FILES)
    for name in IDX_FILES:
        digest = value.get(name)
        if not (isinstance(digest, str) and SHA256.fullmatch(digest)):
            c.fail(f"data.sha256.{name}", "missing or not a sha256 digest", digest, "64 lowercase hex characters")
    return {name: value[name] for name in IDX_FILES if name in value}


def _archs(c: _Checker, value: Any, key: str = "archs") -> dict[str, Arch]:
    """The architectures of ``key`` (archs, or evidence.heldout), one line each."""
    if not isinstance(value, dict) or not value:
        c.fail(key, "missing, empty or not a mapping", value,
               "at least one entry like base: {hidden: [300, 100]}")
        return {}
    archs = {}
    for name, spec in value.items():
        path = f"{key}.{name}"
        if not c.safe_name(name, path, "architecture"):
            continue
        if name == "logs":  # models/logs/ holds every arch's TensorBoard logs
            c.fail(path, "reserved architecture name", name, "any other name")
            continue
        if not isinstance(spec, dict):
            c.fail(path, "not a mapping", spec, "a mapping like {hidden: [300, 100]}")
            continue
        c.unknown_keys(spec, path, keys(Arch))
        hidden = spec.get("hidden")
        if not isinstance(hidden, list) or not hidden or not all(
            isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in hidden
        ):
            c.fail(f"{path}.hidden", "not a list of positive layer sizes", hidden,
                   "a non-empty list of integers > 0, like [300, 100]")
            continue
        if not _size_ok(c, f"{path}.hidden", hidden):
            continue
        archs[name] = Arch(name, tuple(hidden), **c.declared(spec, Arch, path))
    return archs


def _size_ok(c: _Checker, key: str, hidden: list[int]) -> bool:
    """Within the stated limits (schema.MAX_*): refused now rather than out of memory later."""
    if len(hidden) > MAX_HIDDEN_LAYERS:
        c.fail(key, "too many hidden layers", len(hidden), f"at most {MAX_HIDDEN_LAYERS} layers")
        return False
    n = count_params(hidden)
    if n > MAX_PARAMS:
        c.fail(key, f"too big: {n:,} parameters", hidden, f"layer sizes giving at most {MAX_PARAMS:,} parameters")
        return False
    return True


def _yaml() -> YAML:
    return YAML(typ="safe", pure=True)  # YAML 1.2; pure: the same parse whether or not the C parser is built


def load_raw(path: Path = PARAMS_FILE) -> Any:
    """The parsed YAML as plain dicts, lists and scalars, unchecked; refused by name when it is too big, expands
    too far through aliases or is not text."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise ParamsError([f"{path}: not found (run from the project root)"]) from None
    return raw_from(data, str(path))


def raw_from(data: bytes, name: str, fix: str = "`git checkout params.yaml`") -> Any:
    """``data``, the bytes of a params file called ``name`` (a path, or `<rev>:params.yaml`), parsed as load_raw
    parses it; ``fix``: what restores it."""
    if len(data) > MAX_BYTES:
        raise ParamsError([f"{name}: larger than the {MAX_BYTES:,} bytes a params file may have: is it the right "
                           f"file? Restore it with {fix}"])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ParamsError([f"{name}: not UTF-8 text (byte {err.start}): is it the right file? Restore it with "
                           f"{fix}"]) from None
    try:
        root = _yaml().compose(text)
        nodes = _expanded_size(root, {})
        if nodes > MAX_NODES:
            raise ParamsError([f"{name}: its aliases expand it to {nodes:,} values, more than the {MAX_NODES:,} a "
                               f"params file may have: write the values out, or restore it with {fix}"])
        duplicates = _duplicate_keys(root, name)
        if duplicates:
            raise ParamsError(duplicates)
        return _plain(_yaml().load(text))
    except YAMLError as err:
        raise ParamsError([f"{name}: not valid YAML: {_yaml_problem(err)}; correct it there, then rerun"]) from None


def dump_raw(raw: Any) -> str:
    """YAML that load_raw (and DVC) read back as ``raw``."""
    buf = io.StringIO()
    yaml = _yaml()
    yaml.default_flow_style = False
    yaml.sort_base_mapping_type_on_output = False  # keep the file's order of keys
    yaml.dump(raw, buf)
    return buf.getvalue()


def _yaml_problem(err: YAMLError) -> str:
    """One line: where, and what the parser found."""
    if not isinstance(err, MarkedYAMLError):
        return str(err).strip().splitlines()[0]
    mark = err.problem_mark or err.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    context = f"{err.context}: " if err.context else ""
    return f"{where}{context}{err.problem}"


def _expanded_size(node: Node | None, sizes: dict[int, int]) -> int:
    """How many values ``node`` holds once every alias is expanded, counted over the shared nodes once each (an
    alias bomb is small as nodes, huge expanded)."""
    if node is None:
        return 0
    if id(node) not in sizes:
        sizes[id(node)] = 0  # a node that holds itself (a recursive alias) counts once
        children = [n for pair in node.value for n in pair] if isinstance(node, MappingNode) else (
            node.value if isinstance(node, SequenceNode) else [])
        sizes[id(node)] = min(1 + sum(_expanded_size(child, sizes) for child in children), MAX_NODES + 1)
    return sizes[id(node)]


def _duplicate_keys(node: Node | None, path: Path | str, key_path: str = "") -> list[str]:
    """A key given twice in one mapping: YAML forbids it and a reader would silently keep one."""
    problems = []
    if isinstance(node, MappingNode):
        lines: dict[tuple[str, Any], int] = {}
        for key_node, value_node in node.value:
            key = (key_node.tag, key_node.value)
            line = key_node.start_mark.line + 1
            full = f"{key_path}.{key_node.value}" if key_path else str(key_node.value)
            if key in lines:
                problems.append(f"{path}: {full}: duplicate key (got it on lines {lines[key]} and {line}; "
                                "expected each key once)")
            else:
                lines[key] = line
            problems += _duplicate_keys(value_node, path, full)
    elif isinstance(node, SequenceNode):
        for i, item in enumerate(node.value):
            problems += _duplicate_keys(item, path, f"{key_path}[{i}]")
    return problems


def _plain(value: Any) -> Any:
    """Mappings as dicts, sequences as lists; scalars as the loader made them."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def load_params(path: Path = PARAMS_FILE) -> Params:
    return parse_params(load_raw(path))


if __name__ == "__main__":  # `python -m stages.plumbing.params`: what make runs before a plain `dvc repro`
    from stages.plumbing.cli import run

    run(lambda argv: load_params() and None, usage="usage: python -m stages.plumbing.params (checks params.yaml)")
