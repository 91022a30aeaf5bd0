"""Where each stage writes, per architecture (dvc.yaml spells the same paths)."""

from pathlib import Path
from typing import Iterable

RAW_DIR = Path("data/raw")
PREPARED_DIR = Path("data/prepared")
MODELS = Path("models")
REPORTS = Path("reports")


LOGS = MODELS / "logs"  # so no arch may be called "logs"


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
LR_STUDY_JSON = REPORTS / "lr_study.json"
STUDIES = REPORTS / "studies"

# Where each arch has an output, as (folder, glob): the part of a name before the first dot is the arch.
PER_ARCH_OUTPUTS = (
    (MODELS, "*/"),  # folders only: a user's file in models/ is not an arch's
    (LOGS, "*/"),
    *((REPORTS / folder, pattern) for folder in ("lr_range", "history", "train", "metrics", "errors", "timings")
      for pattern in ("*.json", "*.csv")),
)


def stale_outputs(archs: Iterable[str], root: Path = Path(".")) -> list[Path]:
    """Per-arch outputs of archs no longer in params: DVC leaves them behind when an arch is removed."""
    keep = set(archs)
    return sorted(
        entry
        for folder, pattern in PER_ARCH_OUTPUTS
        for entry in (root / folder).glob(pattern)
        if not entry.name.startswith(".") and entry.name.split(".")[0] not in keep and entry != root / LOGS
    )
