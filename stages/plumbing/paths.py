"""Where each stage writes, per architecture (dvc.yaml spells the same paths)."""

import json
import re
from pathlib import Path
from typing import Iterable, Iterator

from stages.lib.lr_finder import RULES
from stages.lib.schema import GRID_NEIGHBOURHOOD

RAW_DIR = Path("data/raw")
PREPARED_DIR = Path("data/prepared")
MODELS = Path("models")
REPORTS = Path("reports")


LOGS = MODELS / "logs"  # so no arch may be called "logs"
SEED_NAME = re.compile(r"seed-\d+")
SEED_FILE = re.compile(r"seed-\d+\.keras")
# What keras.callbacks.TensorBoard (profile_batch=0, write_graph=False) writes in a run's log folder.
TENSORBOARD_PARTS = ("train", "validation")
TENSORBOARD_EVENTS = "events.out.tfevents."


def model_dir(arch: str) -> Path:
    """One folder per arch (one DVC output): the kept model of each training seed."""
    return MODELS / arch


def model_file(arch: str, seed: int, folder: Path | None = None) -> Path:
    return (folder or model_dir(arch)) / f"seed-{seed}.keras"


def logs_dir(arch: str) -> Path:
    """TensorBoard logs, apart from the models: their file names hold the time, so a retrain
    that reproduces the same models must not change what evaluate depends on."""
    return LOGS / arch


def tensorboard_dir(arch: str, seed: int, folder: Path | None = None) -> Path:
    return (folder or logs_dir(arch)) / f"seed-{seed}"


def lr_range_csv(arch: str) -> Path:
    return REPORTS / "lr_range" / f"{arch}.csv"


def lr_range_json(arch: str) -> Path:
    return REPORTS / "lr_range" / f"{arch}.json"


def history_csv(arch: str) -> Path:
    return REPORTS / "history" / f"{arch}.csv"


def train_json(arch: str) -> Path:
    return REPORTS / "train" / f"{arch}.json"


def timing_json(arch: str, stage: str) -> Path:
    """Wall time of one stage's work; kept apart so that a rerun with the same result changes
    nothing downstream stages read."""
    return REPORTS / "timings" / f"{arch}.{stage}.json"


def metrics_json(arch: str) -> Path:
    return REPORTS / "metrics" / f"{arch}.json"


def errors_json(arch: str) -> Path:
    """The first seed's confusion matrix and most confidently wrong test digits."""
    return REPORTS / "errors" / f"{arch}.json"


REPORT_MD = REPORTS / "report.md"
FIGURES = REPORTS / "figures"

# The evidence pipeline (evidence/dvc.yaml): one record per stage, <kind>/<arch>/seed-<n>.json, so that
# a stage can depend on one arch's folder of another kind.
EVIDENCE = REPORTS / "evidence"
EVIDENCE_KINDS = ("range", "grid", "picks", "long", "long_rules")
ANSWER_MD = REPORTS / "answer.md"
ANSWER_FIGURES = REPORTS / "answer"


def evidence_dir(kind: str, arch: str) -> Path:
    return EVIDENCE / kind / arch


def evidence_json(kind: str, arch: str, seed: int, rate: str | None = None) -> Path:
    """One stage's record; long_rules has one per (rate source, seed)."""
    return evidence_dir(kind, arch) / (f"{rate}-seed-{seed}.json" if rate else f"seed-{seed}.json")


def evidence_curve_csv(arch: str, seed: int) -> Path:
    return evidence_dir("range", arch) / f"seed-{seed}.csv"


def evidence_timing(kind: str, arch: str, seed: int, rate: str | None = None) -> Path:
    """Kept apart from the records, so that a rerun with the same results changes nothing downstream."""
    return EVIDENCE / "timings" / evidence_json(kind, arch, seed, rate).relative_to(EVIDENCE)

def stage_outputs(stage: str) -> dict[Path, bool] | None:
    """What a dvc.yaml stage (``train@base``) writes, each with whether DVC caches it (False: committed to
    git, `cache: false`); None for a stage this pipeline does not have. tests/test_paths.py checks dvc.yaml."""
    name, _, arch = stage.partition("@")
    per_arch = {
        "lr_range": lambda: {lr_range_csv(arch): False, lr_range_json(arch): False, timing_json(arch, name): False},
        "train": lambda: {model_dir(arch): True, logs_dir(arch): True, train_json(arch): False,
                          history_csv(arch): False, timing_json(arch, name): False},
        "evaluate": lambda: {errors_json(arch): False, metrics_json(arch): False, timing_json(arch, name): False},
    }
    if arch:
        return per_arch[name]() if name in per_arch else None
    return {"download": {RAW_DIR: True}, "split": {PREPARED_DIR: True},
            "report": {REPORT_MD: False, FIGURES: False}}.get(name)


def arch_outputs(arch: str) -> list[Path]:
    """Everything the quick study's per-arch stages write for ``arch``."""
    return [train_json(arch), lr_range_json(arch), model_dir(arch), logs_dir(arch), lr_range_csv(arch),
            history_csv(arch), metrics_json(arch), errors_json(arch),
            *(timing_json(arch, stage) for stage in ("lr_range", "train", "evaluate"))]


def evidence_folders(arch: str) -> list[tuple[str, Path]]:
    """(kind, folder) of each folder the evidence stages write ``arch``'s files in: records and timings."""
    return [(kind, folder) for kind in EVIDENCE_KINDS
            for folder in (evidence_dir(kind, arch), evidence_timing(kind, arch, 0).parent)]


def _arch_named(record: Path) -> str | None:
    """The arch a JSON record names, None for a file that is not one of ours."""
    try:
        arch = json.loads(record.read_text()).get("arch")
    except (OSError, ValueError, AttributeError):
        return None
    return arch if isinstance(arch, str) else None


def recorded_archs(root: Path = Path(".")) -> set[str]:
    """Archs some run of either pipeline wrote results for: the train and range-test records say so, each named
    after its arch, and the evidence records, each in its arch's folder."""
    names = {record.stem for record in (*(root / REPORTS / "train").glob("*.json"),
                                        *(root / REPORTS / "lr_range").glob("*.json"))
             if _arch_named(record) == record.stem}
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
    writes: named exactly as evidence_json (evidence_timing uses the same name) or, for range,
    evidence_curve_csv name one; long_rules' names start with a rate source of evidence.long_rules.rates."""
    seed = path.stem.rpartition("seed-")[2]
    if path.is_symlink() or not path.is_file() or not (seed.isascii() and seed.isdigit()):
        return False
    rates = (*RULES, *GRID_NEIGHBOURHOOD) if kind == "long_rules" else (None,)
    names = {evidence_json(kind, arch, int(seed), rate).name for rate in rates}
    if kind == "range":
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
