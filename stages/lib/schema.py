"""What params.yaml means: the shape of each section, its defaults, and what follows from it
(training seeds, the rule per arch). This module shapes results, so every stage lists it
in its dvc.yaml deps; reading and checking the file is stages.plumbing.params's job.
"""

from __future__ import annotations

from dataclasses import dataclass

ACTIVATIONS = ("relu", "elu", "selu", "gelu", "tanh", "sigmoid", "swish", "leaky_relu")
SOURCE_KINDS = ("url", "npm", "local")
NUMERICS = ("portable", "native")

# What the models see: 28 x 28 pixels in, one probability per digit out.
INPUT_SIZE = 28 * 28
NUM_CLASSES = 10
# Size limits, far beyond any MNIST MLP worth training, so that a typo like an extra three
# zeros is refused in a fraction of a second instead of ending in an out-of-memory error
# minutes later. The params validator refuses bigger archs; the model loader refuses bigger files.
MAX_PARAMS = 50_000_000  # weights and biases of one arch: 200 MB of float32
MAX_HIDDEN_LAYERS = 100
# Arch and study names become file names: the longest, `.<name>.lr_range.json.XXXXXXXX.tmp`,
# is the name plus 28 bytes, far under the 255 bytes most file systems allow.
MAX_NAME_LENGTH = 100


def count_params(hidden: tuple[int, ...] | list[int], inputs: int = INPUT_SIZE, outputs: int = NUM_CLASSES) -> int:
    """Weights and biases of Flatten -> Dense(h) per hidden layer -> Dense(outputs)."""
    sizes = [inputs, *hidden, outputs]
    return sum((n_in + 1) * n_out for n_in, n_out in zip(sizes, sizes[1:]))


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
class ReportParams:
    tie_margin: float


# The rates evidence.long_rules may train besides the rules' picks: the one-epoch grid's best rate
# (on validation) and its neighbours on the grid.
GRID_NEIGHBOURHOOD = ("grid_lower", "grid_best", "grid_higher")


@dataclass(frozen=True)
class LongRulesParams:
    """The rules' picks trained until early stopping, for one arch (the long budget is costly)."""
    arch: str
    seeds: tuple[int, ...]
    rates: tuple[str, ...]  # rule names (lr_finder.RULES) and GRID_NEIGHBOURHOOD entries


@dataclass(frozen=True)
class EvidenceParams:
    """The evidence pipeline (evidence/dvc.yaml): one stage per (arch, seed) and kind of run."""
    seeds: tuple[int, ...]  # training seeds, the same for every arch and rate
    range_seeds: tuple[int, ...]  # LR range tests per arch: how far each rule's pick wanders
    grid: tuple[float, ...]  # rates every arch trains at for one epoch
    max_epochs: int  # the long budget: until early stopping decides, at most this many epochs
    patience: int
    long_rules: LongRulesParams


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
    report: ReportParams
    evidence: EvidenceParams
    archs: dict[str, Arch]

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
