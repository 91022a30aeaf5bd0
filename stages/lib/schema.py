"""What params.yaml means: the shape of each section, its defaults, and what follows from it
(training seeds, the rule per arch). This module shapes results, so every stage lists it
in its dvc.yaml deps; reading and checking the file is stages.lib.params's job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ACTIVATIONS = ("relu", "elu", "selu", "gelu", "tanh", "sigmoid", "swish", "leaky_relu")
SOURCE_KINDS = ("url", "npm", "local")
NUMERICS = ("portable", "native")


class ParamsError(Exception):
    """All problems found in params.yaml, one line each."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Source:
    kind: str  # one of SOURCE_KINDS
    location: str  # URL, npm package spec, or local path
    sha256: str | None = None  # of the downloaded archive, when known


@dataclass(frozen=True)
class DataParams:
    val_size: int
    sources: tuple[Source, ...]
    sha256: dict[str, str]


@dataclass(frozen=True)
class LrRangeParams:
    start_lr: float
    factor: float
    batch_size: int
    epochs: int
    stop_factor: float
    smoothing: float
    rule: str


@dataclass(frozen=True)
class TrainParams:
    epochs: int
    batch_size: int
    patience: int
    repeats: int = 1  # training runs per arch, seeds seed, seed + 1, ...


@dataclass(frozen=True)
class ComputeParams:
    """How the math runs. Under ``portable`` numerics the numbers do not depend on threads or
    steps_per_execution; ``native`` lets TensorFlow pick kernels for this CPU (see README)."""
    steps_per_execution: int
    numerics: str = "portable"  # one of NUMERICS
    threads: int = 1  # TensorFlow intra-op threads: a batch-32 step is too small to split


@dataclass(frozen=True)
class LrStudyParams:
    grid: tuple[float, ...]  # fixed rates the opt-in study trains every arch with


@dataclass(frozen=True)
class ReportParams:
    tie_margin: float


@dataclass(frozen=True)
class Arch:
    name: str
    hidden: tuple[int, ...]
    activation: str = "relu"
    lr: float | None = None  # fixed rate: skips the range test's pick
    rule: str | None = None  # overrides lr_range.rule for this arch


@dataclass(frozen=True)
class Params:
    seed: int
    data: DataParams
    lr_range: LrRangeParams
    train: TrainParams
    compute: ComputeParams
    lr_study: LrStudyParams
    report: ReportParams
    archs: dict[str, Arch]
    studies: dict[str, dict[str, Any]]  # name -> {dotted key: value} overrides of this file

    @property
    def seeds(self) -> tuple[int, ...]:
        """One training run per seed; the LR range test uses only the first."""
        return tuple(self.seed + k for k in range(self.train.repeats))

    def arch(self, name: str) -> Arch:
        if name not in self.archs:
            raise ParamsError(
                [f"params.yaml: archs: no architecture named {name!r} (expected one of {', '.join(self.archs)})"]
            )
        return self.archs[name]

    def rule_for(self, arch: Arch) -> str:
        return arch.rule or self.lr_range.rule
