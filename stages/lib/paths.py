"""Where each stage writes, per architecture (dvc.yaml spells the same paths)."""

from pathlib import Path
from typing import Iterable

RAW_DIR = Path("data/raw")
PREPARED_DIR = Path("data/prepared")
MODELS = Path("models")
REPORTS = Path("reports")


def model_file(arch: str) -> Path:
    return MODELS / f"{arch}.keras"


def tensorboard_dir(arch: str) -> Path:
    return MODELS / "logs" / arch


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


REPORT_MD = REPORTS / "report.md"
FIGURES = REPORTS / "figures"
LR_STUDY_JSON = REPORTS / "lr_study.json"

# Where each arch has an output, as (folder, glob): the part of a name before the first dot is the arch.
PER_ARCH_OUTPUTS = (
    (MODELS, "*.keras"),
    (MODELS / "logs", "*"),
    *((REPORTS / folder, pattern) for folder in ("lr_range", "history", "train", "metrics", "timings")
      for pattern in ("*.json", "*.csv")),
)


def stale_outputs(archs: Iterable[str], root: Path = Path(".")) -> list[Path]:
    """Per-arch outputs of archs no longer in params: DVC leaves them behind when an arch is removed."""
    keep = set(archs)
    return sorted(
        entry
        for folder, pattern in PER_ARCH_OUTPUTS
        for entry in (root / folder).glob(pattern)
        if not entry.name.startswith(".") and entry.name.split(".")[0] not in keep
    )
