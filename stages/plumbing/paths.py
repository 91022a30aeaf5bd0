"""Where each stage writes: the quick study's outputs in one table (OUTPUTS), the evidence's records by kind, arch
and seed, and which leftovers of removed archs `make prune` may remove."""

import json
import os
import re
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

from stages.lib.idx import IDX_FILES
from stages.lib.lr_finder import RULES
from stages.lib.schema import GRID_NEIGHBOURHOOD, EvidenceParams

REPORTS = Path("reports")
SEED_NAME = re.compile(r"seed-\d+")
SEED_FILE = re.compile(r"seed-\d+\.keras")
# What keras.callbacks.TensorBoard (profile_batch=0, write_graph=False) writes in a run's log folder.
TENSORBOARD_PARTS = ("train", "validation")
TENSORBOARD_EVENTS = "events.out.tfevents."


@dataclass(frozen=True)
class Output:
    """One file or folder a quick-study stage (dvc.yaml) writes: the stage, its path (``{arch}``: the arch of a
    per-arch stage) and how dvc.yaml declares it:

    - "out": cached by DVC, not in git;
    - "committed": a plain `cache: false` out, in git (keeps its stage out of the run cache);
    - "metric" / "plot": `cache: false`, in git; what `dvc metrics`/`dvc plots` and `dvc exp show` list;
    - None: not a DVC output at all (timings, TensorBoard logs): they differ on every run, so a rerun that
      reproduces the results leaves git's tree and dvc.lock unchanged. Gitignored.
    """
    stage: str
    path: str
    declared: str | None

    @property
    def per_arch(self) -> bool:
        return "{arch}" in self.path

    @property
    def cached(self) -> bool:
        return self.declared == "out"

    def at(self, arch: str = "") -> Path:
        return Path(self.path.format(arch=arch))


# Every output of dvc.yaml, once: the helpers below, stage_outputs, arch_outputs and writer() read this table,
# and tests/test_paths.py holds it against dvc.yaml. Only the headline scores are metrics: they are what
# `dvc exp show`, `dvc metrics diff`, VS Code and DVC Studio show.
OUTPUTS = {
    "raw": Output("download", "data/raw", "out"),
    "prepared": Output("split", "data/prepared", "out"),
    "lr_range_csv": Output("lr_range", "reports/lr_range/{arch}.csv", "plot"),
    "lr_range_json": Output("lr_range", "reports/lr_range/{arch}.json", "plot"),
    "lr_range_timing": Output("lr_range", "reports/timings/{arch}.lr_range.json", None),
    "models": Output("train", "models/{arch}", "out"),  # seed-<n>.keras per training seed
    # TensorBoard logs, apart from the models; train replaces its arch's folder whole. No arch may be "logs".
    "logs": Output("train", "models/logs/{arch}", None),
    "train_json": Output("train", "reports/train/{arch}.json", "out"),
    "history_csv": Output("train", "reports/history/{arch}.csv", "plot"),
    "train_timing": Output("train", "reports/timings/{arch}.train.json", None),
    # Every seed's scores and the model's size: what the report reads.
    "evaluation_json": Output("evaluate", "reports/evaluation/{arch}.json", "out"),
    # The first seed's confusion matrix and most confidently wrong test digits.
    "errors_json": Output("evaluate", "reports/errors/{arch}.json", "out"),
    # The first seed's label and prediction per test image: DVC's confusion-matrix plot.
    "predictions_csv": Output("evaluate", "reports/predictions/{arch}.csv", "plot"),
    "metrics_json": Output("evaluate", "reports/metrics/{arch}.json", "metric"),
    "evaluate_timing": Output("evaluate", "reports/timings/{arch}.evaluate.json", None),
    "report_md": Output("report", "reports/report.md", "committed"),
    "figures": Output("report", "reports/figures", "committed"),
}
RAW_DIR = OUTPUTS["raw"].at()
PREPARED_DIR = OUTPUTS["prepared"].at()
REPORT_MD = OUTPUTS["report_md"].at()
FIGURES = OUTPUTS["figures"].at()
LOGS = Path(OUTPUTS["logs"].path).parent


def model_dir(arch: str) -> Path:
    return OUTPUTS["models"].at(arch)


def model_file(arch: str, seed: int, folder: Path | None = None) -> Path:
    return (folder or model_dir(arch)) / f"seed-{seed}.keras"


def logs_dir(arch: str) -> Path:
    return OUTPUTS["logs"].at(arch)


def tensorboard_dir(arch: str, seed: int, folder: Path | None = None) -> Path:
    return (folder or logs_dir(arch)) / f"seed-{seed}"


def lr_range_csv(arch: str) -> Path:
    return OUTPUTS["lr_range_csv"].at(arch)


def lr_range_json(arch: str) -> Path:
    return OUTPUTS["lr_range_json"].at(arch)


def history_csv(arch: str) -> Path:
    return OUTPUTS["history_csv"].at(arch)


def train_json(arch: str) -> Path:
    return OUTPUTS["train_json"].at(arch)


def timing_json(arch: str, stage: str) -> Path:
    return OUTPUTS[f"{stage}_timing"].at(arch)


def stage_timing(stage: str) -> list[Path]:
    """The timing record of a quick-study stage (``train@base``); none for any other."""
    name, _, arch = stage.partition("@")
    timing = OUTPUTS.get(f"{name}_timing")
    return [timing.at(arch)] if timing and arch else []


def metrics_json(arch: str) -> Path:
    return OUTPUTS["metrics_json"].at(arch)


def errors_json(arch: str) -> Path:
    return OUTPUTS["errors_json"].at(arch)


def evaluation_json(arch: str) -> Path:
    return OUTPUTS["evaluation_json"].at(arch)


def predictions_csv(arch: str) -> Path:
    return OUTPUTS["predictions_csv"].at(arch)


def stage_outputs(stage: str) -> dict[Path, str] | None:
    """The DVC outputs of a dvc.yaml stage (``train@base``), each with how dvc.yaml declares it; None for a
    stage this pipeline does not have."""
    name, _, arch = stage.partition("@")
    outputs = {out.at(arch): out.declared for out in OUTPUTS.values()
               if out.stage == name and out.per_arch == bool(arch) and out.declared}
    return outputs or None


def arch_outputs(arch: str) -> list[Path]:
    """Everything the quick study's per-arch stages write for ``arch``."""
    return [out.at(arch) for out in OUTPUTS.values() if out.per_arch]


def writer(path: Path) -> str | None:
    """The stage (``evaluate@base``) that writes ``path``, None when no stage of dvc.yaml does."""
    for out in OUTPUTS.values():
        pattern = re.escape(out.path).replace(re.escape("{arch}"), "(?P<arch>[^/]+)")
        match = re.fullmatch(pattern, Path(path).as_posix())
        if match:
            return f"{out.stage}@{match['arch']}" if out.per_arch else out.stage
    return None


# The evidence pipeline (evidence/dvc.yaml): one record per stage, <kind>/<arch>/seed-<n>.json, so that
# a stage can depend on one arch's folder of another kind.
EVIDENCE = REPORTS / "evidence"
EVIDENCE_TIMINGS = EVIDENCE / "timings"


@dataclass(frozen=True)
class EvidenceKind:
    """One kind of evidence stage: its matrix in evidence/dvc.yaml and the files it writes. Its record's shape is
    stages.lib.shapes.EVIDENCE[kind] (a result, so it lives with the results' code)."""
    seeds: str  # the evidence params' seed list its stages run over ("long_rules.seeds": evidence.long_rules.seeds)
    heldout: bool = False  # the held-out networks (evidence.heldout) run it too, as stage heldout_<kind>
    curve: bool = False  # a CSV curve beside each record (evidence_curve_csv)
    by_rate: bool = False  # see by_rate()

    def seeds_of(self, evidence: EvidenceParams) -> tuple[int, ...]:
        return attrgetter(self.seeds)(evidence)


# Every kind of evidence stage, once, in the order the answer lists what each cost: paths, the records' shapes
# (stages.lib.shapes.EVIDENCE), the answer's readers and timings and the workers' shares derive from this table,
# and tests/test_paths.py holds it against evidence/dvc.yaml. docs/adding-an-evidence-kind.md says how to add one.
EVIDENCE_KINDS = {
    "range": EvidenceKind("range_seeds", heldout=True, curve=True),  # LR range tests with other seeds
    "grid": EvidenceKind("seeds", heldout=True),  # one epoch at every grid rate
    "picks": EvidenceKind("seeds", heldout=True),  # one epoch at every rate a rule picked
    "long": EvidenceKind("seeds"),  # the quick study's rate, until early stopping
    "long_rules": EvidenceKind("long_rules.seeds", by_rate=True),  # every rule's pick, until early stopping
}
# The held-out networks (evidence.heldout) run the regret protocol's kinds under stages of their own names.
HELDOUT_STAGES = {f"heldout_{kind}": kind for kind, spec in EVIDENCE_KINDS.items() if spec.heldout}
RATE_SOURCES = (*RULES, *GRID_NEIGHBOURHOOD)  # what evidence.long_rules.rates may name


def by_rate(kind: str) -> bool:
    """Whether the stages of ``kind`` (any stage name: `train` and `heldout_range` are not) run per (rate source,
    seed) of evidence.long_rules, all for evidence.long_rules.arch, instead of per (arch, seed): long_rules. The
    one question every place that tells such a kind apart asks (evidence_units, evidence_made, worker.arch_of)."""
    spec = EVIDENCE_KINDS.get(kind)
    return spec is not None and spec.by_rate


class Unit(NamedTuple):
    """One evidence stage, as its record names it: kind, arch and seed; the rate source of a by_rate kind."""
    kind: str
    arch: str
    seed: int
    rate: str | None = None


def evidence_units(kind: str, evidence: EvidenceParams, archs: Iterable[str]) -> list[Unit]:
    """Every stage of ``kind`` as evidence/dvc.yaml's matrix runs it, in its order.

    Args:
        kind: a key of EVIDENCE_KINDS.
        evidence: params' evidence section: the seeds (and, for a by_rate kind, its arch and rate sources).
        archs: the networks to run it for (params.archs, or evidence.heldout for the heldout_<kind> stages); a
            by_rate kind ignores them and runs for evidence.long_rules.arch.
    """
    seeds = EVIDENCE_KINDS[kind].seeds_of(evidence)
    if by_rate(kind):
        return [Unit(kind, evidence.long_rules.arch, s, rate) for rate in evidence.long_rules.rates for s in seeds]
    return [Unit(kind, arch, s) for arch in archs for s in seeds]


ANSWER_MD = REPORTS / "answer.md"
ANSWER_JSON = REPORTS / "answer.json"  # the headline: the evidence's one metric
ANSWER_FIGURES = REPORTS / "answer"
ANSWER_FROM_REPORT = ANSWER_MD.relative_to(REPORT_MD.parent).as_posix()  # the link in report.md


# The names of the files each folder output's stage writes in it (every other output is one file). Any other file
# there is one a user put there, which `dvc repro` would delete with the folder before the stage runs: lanes and the
# workers stop first (foreign_files). tests/test_paths.py holds these against the stages that write them.
REPORT_FIGURE_NAMES = ("lr_range.png", "lr_range_rules.png", "digits.png", "confusion.png", "confident_errors.png",
                       "learning_curves.png")
ANSWER_FIGURE_NAMES = ("gaps.png", "long_curves.png", "long_losses.png", "cost.png", "per_class.png", "grid.png",
                       "rule_picks.png")


def _names(names: Iterable[str]) -> re.Pattern:
    return re.compile("|".join(map(re.escape, names)))


FOLDER_FILES = {
    OUTPUTS["raw"].path: _names(IDX_FILES),
    OUTPUTS["prepared"].path: _names(f"{kind}_{part}.npy" for kind in "xy" for part in ("train", "val", "test")),
    OUTPUTS["models"].path: SEED_FILE,
    OUTPUTS["figures"].path: _names(REPORT_FIGURE_NAMES),
    ANSWER_FIGURES.as_posix(): _names(ANSWER_FIGURE_NAMES),
}
# What stages/ground/atomic.py leaves beside a file <name> when a write of it is killed.
ATOMIC_LEFTOVER = re.compile(r"\.(.+)\.[^.]+\.(?:tmp|old)")
MAX_FOREIGN = 1_000  # a folder holding more user files than this is not walked further: these are enough to say so


def stage_wrote(folder: Path, name: str) -> bool:
    """Whether ``name`` (relative to ``folder``, a folder output) is a file its stage writes there (FOLDER_FILES),
    or what a killed write of one left."""
    names = next((pattern for template, pattern in FOLDER_FILES.items()
                  if re.fullmatch(re.escape(template).replace(re.escape("{arch}"), "[^/]+"), folder.as_posix())), None)
    leftover = ATOMIC_LEFTOVER.fullmatch(name)
    return names is not None and bool(names.fullmatch(name) or leftover and names.fullmatch(leftover[1]))


def foreign_files(folder: Path, recorded: set[str]) -> list[Path]:
    """The files (or symlinks) inside ``folder``, a stage's folder output, that are neither in DVC's record of it
    (``recorded``: paths relative to it, from the lock's .dir object in the cache) nor named as its stage writes
    them: a user's, which `dvc repro` would delete with the folder. At most MAX_FOREIGN."""
    found: list[Path] = []
    for where, folders, files in os.walk(folder):
        entries = [*files, *(name for name in folders if os.path.islink(os.path.join(where, name)))]
        for name in sorted(entries):
            relative = Path(where, name).relative_to(folder).as_posix()
            if relative not in recorded and not stage_wrote(folder, relative):
                found.append(Path(where, name))
                if len(found) == MAX_FOREIGN:
                    return found
        folders.sort()
    return found



def evidence_dir(kind: str, arch: str) -> Path:
    return EVIDENCE / kind / arch


def evidence_json(kind: str, arch: str, seed: int, rate: str | None = None) -> Path:
    """One stage's record; a by_rate kind (long_rules) has one per (rate source, seed)."""
    return evidence_dir(kind, arch) / (f"{rate}-seed-{seed}.json" if rate else f"seed-{seed}.json")


def evidence_curve_csv(arch: str, seed: int) -> Path:
    return evidence_dir("range", arch) / f"seed-{seed}.csv"


def evidence_timing(kind: str, arch: str, seed: int, rate: str | None = None) -> Path:
    """Kept apart from the records, so that a rerun with the same results changes nothing downstream."""
    return EVIDENCE_TIMINGS / evidence_json(kind, arch, seed, rate).relative_to(EVIDENCE)

def evidence_folders(arch: str) -> list[tuple[str, Path]]:
    """(kind, folder) of each folder the evidence stages write ``arch``'s files in: records and timings."""
    return [(kind, folder) for kind in EVIDENCE_KINDS
            for folder in (evidence_dir(kind, arch), evidence_timing(kind, arch, 0).parent)]


def _arch_named(record: Path) -> str | None:
    """The arch a JSON record names, None for a file that is not one of ours."""
    try:
        arch = json.loads(record.read_text(encoding="utf-8")).get("arch")
    except (OSError, ValueError, AttributeError):
        return None
    return arch if isinstance(arch, str) else None


def recorded_archs(root: Path = Path(".")) -> set[str]:
    """Archs some run of either pipeline wrote results for: the train and range-test records say so, each named
    after its arch, and the evidence records, each in its arch's folder."""
    records = (record for key in ("train_json", "lr_range_json")
               for record in root.glob(OUTPUTS[key].path.format(arch="*")))
    names = {record.stem for record in records if _arch_named(record) == record.stem}
    names |= {record.parent.name for kind in EVIDENCE_KINDS for record in (root / EVIDENCE / kind).glob("*/*.json")
              if _arch_named(record) == record.parent.name}
    return names


def pipeline_made(path: Path) -> bool:
    """Whether ``path`` holds only what the stages write there: a models/<arch>/ folder only seed-<n>.keras
    files; a models/logs/<arch>/ folder only seed-<n>/ folders, each holding only TensorBoard's train/ and
    validation/ folders of event files (a profile or a note put there by hand keeps the folder); anything else
    is a file."""
    if path.is_symlink():
        return False
    if not path.is_dir():
        return path.is_file()
    if path.parent.name == LOGS.name:
        return all(_plain_dir(entry) and SEED_NAME.fullmatch(entry.name) and all(
            _plain_dir(part) and part.name in TENSORBOARD_PARTS and all(
                event.is_file() and not event.is_symlink() and event.name.startswith(TENSORBOARD_EVENTS)
                for event in part.iterdir())
            for part in entry.iterdir()) for entry in path.iterdir())
    return all(entry.is_file() and not entry.is_symlink() and SEED_FILE.fullmatch(entry.name)
               for entry in path.iterdir())


def _plain_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


def evidence_made(path: Path, kind: str, arch: str) -> bool:
    """Whether ``path``, in one of ``arch``'s evidence folders of ``kind``, is a file a stage of that kind
    writes: named exactly as evidence_json (evidence_timing uses the same name) or, for a kind with a curve,
    evidence_curve_csv name one; a by_rate kind's names start with a rate source (RATE_SOURCES)."""
    seed = path.stem.rpartition("seed-")[2]
    if path.is_symlink() or not path.is_file() or not (seed.isascii() and seed.isdigit()):
        return False
    rates = RATE_SOURCES if by_rate(kind) else (None,)
    names = {evidence_json(kind, arch, int(seed), rate).name for rate in rates}
    if EVIDENCE_KINDS[kind].curve:
        names.add(evidence_curve_csv(arch, int(seed)).name)
    return path.name in names


def _leftovers(archs: Iterable[str], root: Path) -> Iterator[tuple[Path, bool]]:
    """Each output on disk of an arch some run wrote results for that ``archs`` no longer lists (DVC leaves them
    behind), with whether a stage wrote all of it. An evidence folder that holds anything else is gone into:
    the stages' files in it are pruned, the rest is left."""
    for arch in sorted(recorded_archs(root) - set(archs)):
        for path in arch_outputs(arch):
            if (root / path).exists() or (root / path).is_symlink():
                yield root / path, pipeline_made(root / path)
        for kind, folder in evidence_folders(arch):
            path = root / folder
            if path.is_symlink() or path.exists() and not path.is_dir():
                yield path, False
            elif path.is_dir():
                made = {entry: evidence_made(entry, kind, arch) for entry in sorted(path.iterdir())}
                if all(made.values()):
                    yield path, True  # the whole folder: no empty folder stays behind
                else:
                    yield from made.items()


def prunable(archs: Iterable[str], root: Path = Path(".")) -> list[Path]:
    """Outputs of archs either pipeline ran that params no longer lists (DVC leaves them behind), and only
    those the stages wrote: nothing a user put in models/ or reports/ is ever listed."""
    return [path for path, made in _leftovers(archs, root) if made]


def left_alone(archs: Iterable[str], root: Path = Path(".")) -> list[Path]:
    """What `make prune` leaves among those outputs: folders holding a file no stage writes, or those files."""
    return [path for path, made in _leftovers(archs, root) if not made]
