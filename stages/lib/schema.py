"""What params.yaml means, each param once: its type, default, the values it allows and what it does (like a
Keras argument documented beside its default), and what follows from them (training seeds, the rule per arch).
This module shapes results, so every stage lists it in its dvc.yaml deps. stages.plumbing.params reads the file
and checks it against what is declared here.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any

ACTIVATIONS = ("relu", "elu", "selu", "gelu", "tanh", "sigmoid", "swish", "leaky_relu")
SOURCE_KINDS = ("url", "npm", "local")
NUMERICS = ("portable", "native")

# What the models see: 28 x 28 pixels in, one probability per digit out.
IMAGE_SHAPE = (28, 28)
INPUT_SIZE = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]
NUM_CLASSES = 10
# Size limits, far beyond any MNIST MLP worth training, so that a typo like an extra three
# zeros is refused in a fraction of a second instead of ending in an out-of-memory error
# minutes later. The params validator refuses bigger archs; the model loader refuses bigger files.
MAX_PARAMS = 50_000_000  # weights and biases of one arch: 200 MB of float32
MAX_HIDDEN_LAYERS = 100
# Arch and study names become file names: the longest, `.<name>.lr_range.json.XXXXXXXX.tmp`,
# is the name plus 28 bytes, far under the 255 bytes most file systems allow.
MAX_NAME_LENGTH = 100
# Sizes that multiply work or memory, each far beyond a useful MNIST study, so that a stray digit is refused
# at once instead of running for days or out of memory.
MAX_SEED = 2**32 - 1  # numpy's legacy seeding, which keras.utils.set_random_seed calls, takes no more
MAX_EPOCHS = 1_000_000
MAX_REPEATS = 1_000
MAX_BATCH_SIZE = 60_000  # all of MNIST's training images
MAX_STEPS_PER_EXECUTION = 100_000
MAX_THREADS = 256
MAX_LIST = 1_000  # seeds and rates in the evidence section


@dataclass(frozen=True)
class Range:
    """The numbers a param allows: integers or any finite number, from ``low`` up to ``high`` (None: no bound),
    each end included unless open."""
    integer: bool
    low: float
    low_open: bool = False
    high: float | None = None
    high_open: bool = True


@dataclass(frozen=True)
class Choice:
    """The names a param allows."""
    names: tuple[str, ...]


def param(allowed: Range | Choice | str, meaning: str, default: Any = MISSING) -> Any:
    """A params.yaml key: what it allows (a Range, a Choice, or the name of what checks it in
    stages.plumbing.params: a list or mapping of its own), what it does, and its default (none: required)."""
    return field(default=default, metadata={"allowed": allowed, "meaning": meaning})


def keys(cls: type) -> tuple[str, ...]:
    """The params.yaml keys of a section, in the order the file and the messages give them."""
    return tuple(f.name for f in fields_of(cls))


def fields_of(cls: type) -> list:
    """The fields of ``cls`` that are params.yaml keys (declared with param())."""
    return [f for f in fields(cls) if "allowed" in f.metadata]


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
    val_size: int = param(Range(True, 1), "validation = the first val_size training images")
    sources: tuple[Source, ...] = param("sources", "tried in order until one gives files matching sha256")
    sha256: dict[str, str] = param("sha256", "the original IDX files' digests, whatever the source")


@dataclass(frozen=True)
class LrRangeParams:
    start_lr: float = param(Range(False, 0, low_open=True), "the sweep's first rate")
    factor: float = param(Range(False, 1, low_open=True), "rate multiplier per batch")
    batch_size: int = param(Range(True, 1, high=MAX_BATCH_SIZE, high_open=False), "images per step")
    epochs: int = param(Range(True, 1, high=MAX_EPOCHS, high_open=False), "at most this many passes")
    stop_factor: float = param(Range(False, 1, low_open=True), "stop once the smoothed loss exceeds this x its best")
    smoothing: float = param(Range(False, 0, high=1), "beta of the bias-corrected moving average")
    rule: str = param("rule", "what picks the rate from the curve: one of lr_finder.RULES")


@dataclass(frozen=True)
class TrainParams:
    epochs: int = param(Range(True, 1, high=MAX_EPOCHS, high_open=False), "at most this many epochs")
    batch_size: int = param(Range(True, 1, high=MAX_BATCH_SIZE, high_open=False), "images per SGD step")
    patience: int = param(Range(True, 0, high=MAX_EPOCHS, high_open=False), "early stopping on val_loss")
    repeats: int = param(Range(True, 1, high=MAX_REPEATS, high_open=False),
                         "training runs per arch, seeds seed, seed + 1, ...", default=1)


@dataclass(frozen=True)
class ComputeParams:
    """How the math runs. Under ``portable`` numerics the numbers do not depend on threads or
    steps_per_execution; ``native`` lets TensorFlow pick kernels for this CPU (see README)."""
    steps_per_execution: int = param(Range(True, 1, high=MAX_STEPS_PER_EXECUTION, high_open=False),
                                     "batches per call into TensorFlow (updates stay per batch): speed only")
    numerics: str = param(Choice(NUMERICS), "portable: the same bytes on any x86-64 CPU", default="portable")
    threads: int = param(Range(True, 1, high=MAX_THREADS, high_open=False),
                         "TensorFlow intra-op threads: a batch-32 step is too small to split", default=1)


@dataclass(frozen=True)
class ReportParams:
    tie_margin: float = param(Range(False, 0, high=1), "within this of the best on validation is named beside it")


# The rates evidence.long_rules may train besides the rules' picks: the one-epoch grid's best rate
# (on validation) and its neighbours on the grid.
GRID_NEIGHBOURHOOD = ("grid_lower", "grid_best", "grid_higher")


@dataclass(frozen=True)
class LongRulesParams:
    """The rules' picks trained until early stopping, for one arch (the long budget is costly)."""
    arch: str = param("long_rules.arch", "the arch, one of archs")
    seeds: tuple[int, ...] = param("seeds", "training seeds")
    rates: tuple[str, ...] = param("long_rules.rates", "rule names (lr_finder.RULES) and GRID_NEIGHBOURHOOD entries")


@dataclass(frozen=True)
class Layer:
    """One layer of a network, after its Input: what stages.lib.keras_model builds and stages.lib.mlp checks a saved
    model against and runs.

    ``kind`` is its keras.layers class, ``name`` the Keras name its weights are saved under, and the fields after
    them its constructor's arguments (None: not one of this kind's).
    """
    kind: str
    name: str
    units: int | None = None
    activation: str | None = None
    rate: float | None = None

    @property
    def options(self) -> dict[str, Any]:
        """Its constructor's arguments besides the name."""
        return {f.name: getattr(self, f.name) for f in fields(self)[2:] if getattr(self, f.name) is not None}

    def weight_shapes(self, inputs: int) -> tuple[tuple[int, ...], ...]:
        """Its weights' shapes in Keras' order when it takes ``inputs`` values: a Dense layer's kernel and bias."""
        return ((inputs, self.units), (self.units,)) if self.kind == "Dense" else ()

    def outputs(self, inputs: int) -> int:
        """Values it gives per image when it takes ``inputs`` (Flatten takes the image's values, flattened)."""
        return self.units if self.kind == "Dense" else inputs


OUTPUT_LAYER = Layer("Dense", "output", NUM_CLASSES, "softmax")


@dataclass(frozen=True)
class Arch:
    name: str
    hidden: tuple[int, ...] = param("hidden", "hidden layer sizes, like [300, 100]")
    activation: str = param(Choice(ACTIVATIONS), "of every hidden layer", default="relu")
    lr: float | None = param(Range(False, 0, low_open=True), "a fixed rate: skips the range test's pick",
                             default=None)
    rule: str | None = param("rule", "overrides lr_range.rule for this arch", default=None)
    batch_size: int | None = param(Range(True, 1, high=MAX_BATCH_SIZE, high_open=False),
                                   "images per step in its range tests and trainings (default: lr_range.batch_size "
                                   "and train.batch_size)", default=None)
    dropout: float = param(Range(False, 0, high=1), "rate of a Dropout layer after each hidden layer; 0: none",
                           default=0.0)

    @property
    def layers(self) -> tuple[Layer, ...]:
        """Its network after the Input: Flatten, a Dense layer per hidden size (each followed by a Dropout layer when
        dropout > 0; at 0, none, so a model without dropout stays what it was), then the softmax output."""
        layers = [Layer("Flatten", "flatten")]
        for i, units in enumerate(self.hidden):
            layers.append(Layer("Dense", f"hidden_{i}", units, self.activation))
            if self.dropout:
                layers.append(Layer("Dropout", f"dropout_{i}", rate=self.dropout))
        return (*layers, OUTPUT_LAYER)


@dataclass(frozen=True)
class EvidenceParams:
    """The evidence pipeline (evidence/dvc.yaml): one stage per (arch, seed) and kind of run."""
    seeds: tuple[int, ...] = param("seeds", "training seeds, the same for every arch and rate")
    range_seeds: tuple[int, ...] = param("seeds", "LR range tests per arch: how far each rule's pick wanders")
    grid: tuple[float, ...] = param("rates", "rates every arch trains at for one epoch")
    max_epochs: int = param(Range(True, 1, high=MAX_EPOCHS, high_open=False),
                            "the long budget: until early stopping decides, at most this many epochs")
    patience: int = param(Range(True, 0, high=MAX_EPOCHS, high_open=False), "early stopping on val_loss")
    long_rules: LongRulesParams = param("section", "the rules' picks at the long budget")
    heldout: dict[str, Arch] = param("heldout", "networks no rule was tuned on: range tests, grid and picks only")


@dataclass(frozen=True)
class Params:
    seed: int = param(Range(True, 0, high=MAX_SEED, high_open=False), "the LR range test's; run k trains with seed + k")
    data: DataParams = param("section", "the data and its split")
    lr_range: LrRangeParams = param("section", "the LR range test")
    train: TrainParams = param("section", "training at the picked rate")
    compute: ComputeParams = param("section", "how the math runs")
    report: ReportParams = param("section", "the quick check's report")
    evidence: EvidenceParams = param("section", "the evidence pipeline")
    archs: dict[str, Arch] = param("archs", "one line per architecture")

    @property
    def seeds(self) -> tuple[int, ...]:
        """One training run per seed; the LR range test uses only the first."""
        return tuple(self.seed + k for k in range(self.train.repeats))

    def arch(self, name: str, heldout: bool = False) -> Arch:
        """The arch ``name`` of archs, or, with ``heldout``, of archs or evidence.heldout."""
        known = {**self.archs, **self.evidence.heldout} if heldout else self.archs
        if name not in known:
            where = "archs or evidence.heldout" if heldout else "archs"
            raise ParamsError([f"params.yaml: {where}: no architecture named {name!r} "
                               f"(expected one of {', '.join(known)})"])
        return known[name]

    def lr_range_for(self, arch: Arch) -> LrRangeParams:
        """The range test's params for ``arch``: its own batch size, if it has one."""
        return replace(self.lr_range, batch_size=arch.batch_size or self.lr_range.batch_size)

    def train_for(self, arch: Arch) -> TrainParams:
        """Training's params for ``arch``: its own batch size, if it has one."""
        return replace(self.train, batch_size=arch.batch_size or self.train.batch_size)

    @property
    def networks(self) -> tuple[str, ...]:
        """Every network some stage trains: archs, then the evidence's held-out ones."""
        return (*self.archs, *self.evidence.heldout)

    def rule_for(self, arch: Arch) -> str:
        return arch.rule or self.lr_range.rule
