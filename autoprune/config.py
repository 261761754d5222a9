"""Run settings as frozen dataclasses, validated on creation and round-tripped through JSON.

Every run directory records the settings it ran with (``to_dict``), so a rerun can tell whether it
continues the same run or would silently mix two.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from autoprune.errors import ConfigError

T = TypeVar("T", bound="_Config")


class _Config:
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"{cls.__name__} has no settings {unknown}: valid ones are {sorted(names)}")
        return cls(**data)

    def _positive(self, *names: str) -> None:
        for name in names:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")


def _check_budget(budget_ms: float | None, budget_ratio: float | None) -> None:
    if budget_ms is not None and budget_ms <= 0:
        raise ConfigError(f"--budget-ms must be > 0, got {budget_ms}")
    if budget_ratio is not None and not 0 < budget_ratio <= 1:
        raise ConfigError(f"--budget-ratio must be in (0, 1], got {budget_ratio}")


@dataclass(frozen=True)
class TrainConfig(_Config):
    """SGD with Nesterov momentum and a cosine learning-rate schedule over ``epochs`` passes (fractions
    allowed); ``augment``: random crop + flip of each batch (None: where the data suits it, see
    ``DatasetSplits.augment_fits``)."""

    epochs: float = 10
    lr: float = 0.05
    batch_size: int = 64
    weight_decay: float = 5e-4
    seed: int = 0
    augment: bool | None = None

    def __post_init__(self) -> None:
        self._positive("epochs", "lr", "batch_size")
        if not math.isfinite(self.epochs):
            raise ConfigError(f"--epochs must be a finite number, got {self.epochs}")


@dataclass(frozen=True)
class ProtocolConfig(_Config):
    """How one network is timed, like trtexec: warm up for ``warmup_ms``, then ``rounds`` rounds of at
    least ``iterations`` runs and at least ``min_round_ms``; the latency is the median of the round
    medians. A round whose median is more than ``max_deviation`` (a fraction) away from the median of
    all rounds, or whose own interquartile range exceeds ``max_round_iqr`` of its median, is measured
    again, at most ``max_remeasures`` times in all; a result still noisy after that is flagged.
    A profile times its dense network as a reference beside every ``reference_every``-th network (0:
    never; less often while it takes over 25 % of the profile's time), round for round, and corrects each
    network's latency for the host's drift by it."""

    warmup_ms: float = 200.0
    iterations: int = 30
    min_round_ms: float = 50.0
    rounds: int = 3
    max_deviation: float = 0.03
    max_round_iqr: float = 0.15
    max_remeasures: int = 3
    reference_every: int = 2  # every row: ~40 % more time on resnet20 on 2 CPU cores, every 2nd ~20 %

    def __post_init__(self) -> None:
        self._positive("iterations", "rounds", "max_deviation", "max_round_iqr")
        if self.warmup_ms < 0 or self.min_round_ms < 0 or self.max_remeasures < 0:
            raise ConfigError("warmup_ms, min_round_ms and max_remeasures must be >= 0")
        if self.reference_every < 0:
            raise ConfigError(f"--reference-every must be >= 0 (0: no reference), got {self.reference_every}")


SAMPLING_METHODS = ("sobol", "lhs", "uniform")


@dataclass(frozen=True)
class SamplingConfig(_Config):
    """Which sub-networks a profile measures: the boundary networks (dense, narrowest, and each group
    alone at its narrowest when ``boundary``), then per-group keep ratios in [``min_ratio``, 1] drawn by
    ``method`` (scrambled Sobol, Latin hypercube or independent uniform), snapped to the group's allowed
    widths: multiples of ``round_to`` and the full width for groups of >= ``round_min_channels``, whole
    channels for smaller ones (:func:`autoprune.graph.allowed_widths`)."""

    samples: int = 100
    seed: int = 0
    min_ratio: float = 0.25
    round_to: int = 8
    round_min_channels: int = 16
    method: str = "sobol"
    boundary: bool = True

    def __post_init__(self) -> None:
        if self.samples < 2:
            raise ConfigError(
                f"samples must be >= 2 (the dense and the narrowest network), got {self.samples}"
            )
        if not 0 < self.min_ratio <= 1:
            raise ConfigError(f"min_ratio must be in (0, 1], got {self.min_ratio}")
        if self.method not in SAMPLING_METHODS:
            raise ConfigError(
                f"unknown sampling method '{self.method}': use one of {', '.join(SAMPLING_METHODS)}"
            )
        self._positive("round_to", "round_min_channels")


@dataclass(frozen=True)
class FitConfig(_Config):
    """``autoprune fit``: which predictor to save (``predictor``: "auto", the most accurate of those
    compared, or a kind's name), which to compare (``compare``; None: every one the profile allows), the
    held-out share and k-fold count, and LPNet's ensemble and training settings. Rows the profiler
    flagged noisy are left out unless ``include_noisy``."""

    predictor: str = "auto"
    compare: tuple[str, ...] | None = None
    holdout: float = 0.2
    folds: int = 5
    include_noisy: bool = False
    members: int = 5
    hidden: int = 64
    layers: int = 2
    epochs: int = 600
    lr: float = 3e-3
    weight_decay: float = 1e-5
    seed: int = 0

    def __post_init__(self) -> None:
        self._positive("hidden", "layers", "epochs", "lr")
        if not 0 < self.holdout < 1:
            raise ConfigError(f"holdout must be in (0, 1), got {self.holdout}")
        if self.folds == 1 or self.folds < 0:
            raise ConfigError(f"--folds must be 0 (no k-fold) or >= 2, got {self.folds}")
        if self.members < 2:
            raise ConfigError(
                f"--members must be >= 2 (the ensemble's spread is its uncertainty), got {self.members}"
            )
        if self.compare is not None:
            object.__setattr__(self, "compare", tuple(self.compare))

    def lpnet_options(self) -> dict[str, Any]:
        keys = ("members", "hidden", "layers", "epochs", "lr", "weight_decay", "seed")
        return {k: getattr(self, k) for k in keys}


MEASURE_SECONDS = 60.0  # finalists: the most time spent repeating one batch's timings until they settle


@dataclass(frozen=True)
class TargetSpec:
    """One latency target, ``PREDICTOR:BUDGET``: a device's predictor (``autoprune fit --out``) and its
    budget in ms (``0.35ms``) or as a share of that device's dense latency (``50%``)."""

    predictor: str
    budget_ms: float | None = None
    budget_ratio: float | None = None

    @classmethod
    def parse(cls, text: str) -> TargetSpec:
        path, _, budget = str(text).rpartition(":")
        b = budget.strip().lower()
        fix = (
            f"--target {text!r}: write PREDICTOR:BUDGET, BUDGET in ms (0.35ms) or as a share of that "
            "device's dense latency (50%)"
        )
        if not path or not b.endswith(("ms", "%")):
            raise ConfigError(fix)
        try:
            value = float(b[:-2] if b.endswith("ms") else b[:-1])
        except ValueError:
            raise ConfigError(fix) from None
        if b.endswith("ms"):
            if not 0 < value < math.inf:
                raise ConfigError(f"--target {text!r}: a budget in ms must be > 0")
            return cls(path, budget_ms=value)
        if not 0 < value <= 100:
            raise ConfigError(f"--target {text!r}: a share of the dense latency must be in (0 %, 100 %]")
        return cls(path, budget_ratio=value / 100)

    def __str__(self) -> str:
        ms, ratio = self.budget_ms, self.budget_ratio
        budget = f"{ms!r}ms" if ms is not None else f"{100 * (ratio or 0)!r}%"
        return f"{self.predictor}:{budget}"


@dataclass(frozen=True)
class SearchConfig(_Config):
    """The search under a latency budget (``budget_ms``, or ``budget_ratio`` of the dense), or for the
    fastest network within an accuracy tolerance (``max_accuracy_drop``: percentage points of validation
    top-1 below the dense network; with a budget as well, both must hold): which ``strategy`` proposes
    networks (None: ``playprune`` with a tolerance, else ``optuna``; resolved on creation, so
    ``to_dict`` records the strategy that ran), how a trial's accuracy is measured (prune with ``criterion``,
    recalibrate BatchNorm on ``calibration_batches`` training batches, fine-tune ``finetune_epochs``,
    score on validation), and how finalists are accepted (measured within budget by a margin of at
    least ``margin``, default the protocol's tolerance)."""

    budget_ms: float | None = None
    budget_ratio: float | None = None
    max_accuracy_drop: float | None = None  # percentage points of validation top-1 (Play and Prune)
    strategy: str | None = None  # None: "playprune" with max_accuracy_drop, else "optuna"
    objectives: int = 1  # optuna: 2 runs NSGA-II on (accuracy, predicted latency)
    prune_trials: bool = True  # optuna, one objective: the median pruner stops hopeless trials
    trials: int | None = None  # None: the strategy's own default (``SearchStrategy.default_trials``)
    finetune_epochs: float = 1.0
    final_epochs: float = 5.0
    finalists: int = 3
    criterion: str = "l1"
    calibration_batches: int = 8
    proxy_batches: int = 5  # the accuracy proxy (screen): BatchNorm re-estimated on this many batches...
    proxy_val: int = 1000  # ...and accuracy on this many fixed validation items
    distill: bool = False  # the final fine-tune distils from the dense network
    augment: bool | None = None  # fine-tunes augment (crop + flip); None: where the data suits it
    margin: float | None = None
    # Finalists are timed beside the dense network and judged on their ratio to it; repeats are added,
    # up to this many seconds per batch of finalists, while a ratio's spread exceeds the margin's floor.
    measure_seconds: float = MEASURE_SECONDS
    lr: float = 0.05  # fine-tune lr: at 0.01 one epoch leaves a heavily pruned ResNet-20 near chance
    budget_confidence: float | None = None  # constrain the predictor's calibrated upper bound, not its mean
    seed: int = 0
    # The strategy's own options, by keyword (its ``options``: e.g. pfp's ``eps``); checked by the strategy.
    strategy_options: dict[str, Any] = field(default_factory=dict)
    # Budgets on other devices, as ``PREDICTOR:BUDGET`` (``TargetSpec``): the network must meet every one
    # (``autoprune.search.targets``); the budget above is the first target's.
    targets: tuple[str, ...] = ()
    # Fields no flag sets by its own name (the CLI test checks every other field is one), and why.
    INTERNAL: ClassVar[dict[str, str]] = {
        "strategy_options": "each strategy's own flags (its `options`)",
        "targets": "--target, repeated (the first stands for --predictor and its budget without them)",
    }

    def __post_init__(self) -> None:
        if self.budget_ms is not None and self.budget_ratio is not None:
            raise ConfigError("give one of --budget-ms X or --budget-ratio R, not both")
        if self.budget_ms is None and self.budget_ratio is None and self.max_accuracy_drop is None:
            raise ConfigError(
                "give a latency budget (--budget-ms X or --budget-ratio R) or an accuracy tolerance "
                "(--max-accuracy-drop P)"
            )
        if self.max_accuracy_drop is not None and not 0 < self.max_accuracy_drop < 100:
            raise ConfigError(
                "--max-accuracy-drop is in percentage points of validation accuracy and must be in "
                f"(0, 100), got {self.max_accuracy_drop}"
            )
        if self.strategy is None:
            object.__setattr__(self, "strategy", "optuna" if self.max_accuracy_drop is None else "playprune")
        _check_budget(self.budget_ms, self.budget_ratio)
        self._positive("finalists", "lr", "calibration_batches", "proxy_batches", "proxy_val")
        if self.trials is not None and self.trials <= 0:
            raise ConfigError(f"--trials must be > 0, got {self.trials}")
        if self.budget_confidence is not None and not 0.5 <= self.budget_confidence < 1:
            raise ConfigError(f"--budget-confidence must be in [0.5, 1), got {self.budget_confidence}")
        if self.finetune_epochs < 0 or self.final_epochs < 0:
            raise ConfigError("fine-tune epochs must be >= 0")
        if self.margin is not None and not 0 <= self.margin < 1:
            raise ConfigError(f"--margin must be in [0, 1), got {self.margin}")
        if self.measure_seconds < 0:
            raise ConfigError(f"--measure-seconds must be >= 0, got {self.measure_seconds}")
        object.__setattr__(self, "targets", tuple(str(TargetSpec.parse(t)) for t in self.targets))
        if self.targets and not self.has_budget:
            raise ConfigError(
                "--target sets a latency budget on other devices: give the first device's too "
                "(--budget-ms X or --budget-ratio R, or the first --target PREDICTOR:BUDGET)"
            )

    @property
    def target_specs(self) -> list[TargetSpec]:
        """The targets after the first (``targets``), parsed."""
        return [TargetSpec.parse(t) for t in self.targets]

    @property
    def strategy_name(self) -> str:
        """The strategy that runs: ``strategy`` as resolved on creation."""
        return self.strategy or "optuna"

    @property
    def has_budget(self) -> bool:
        """Whether a latency budget was given (else only an accuracy tolerance)."""
        return self.budget_ms is not None or self.budget_ratio is not None


@dataclass(frozen=True)
class StampKnobs:
    """STAMP's meta-training and adaptation knobs, shared by ``AdaptConfig`` and the algorithm's own
    ``StampSettings``: episodes (``meta_steps``), classes per episode (``subset_classes``; None: half the
    reference's), the set the generator reads (``set_size``), the query batch (``query_size``), gradient
    steps on the target (``adapt_steps``), the latency loss's ``weight`` and ``pull`` from below, the
    generator's learning rate ``lr``, and the ``seed``."""

    meta_steps: int = 300
    subset_classes: int | None = None
    set_size: int = 64
    query_size: int = 64
    adapt_steps: int = 20
    weight: float = 2.0
    pull: float = 0.1
    lr: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        if self.meta_steps < 0 or self.adapt_steps < 0:
            raise ConfigError("--meta-steps and --adapt-steps must be >= 0")
        if self.subset_classes is not None and self.subset_classes < 2:
            raise ConfigError(f"--subset-classes must be >= 2 (a task to tell apart): {self.subset_classes}")
        if self.weight < 0 or self.pull < 0:
            raise ConfigError(f"--weight and --pull must be >= 0, got {self.weight} and {self.pull}")
        for name in ("set_size", "query_size", "lr"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class AdaptConfig(StampKnobs, _Config):
    """``autoprune adapt`` (STAMP): the budget (``budget_ms``, or ``budget_ratio`` of the dense latency
    measured now), the mask generator's meta-training and adaptation (``StampKnobs``), then BatchNorm
    recalibrated on ``calibration_batches`` target batches, an optional fine-tune (``finetune_epochs``, 0:
    none, at ``finetune_lr``), and the result measured, accepted within the budget by ``margin``
    (default: the protocol's tolerance)."""

    budget_ms: float | None = None
    budget_ratio: float | None = None
    calibration_batches: int = 8
    finetune_epochs: float = 0.0
    finetune_lr: float = 0.01
    margin: float | None = None

    def __post_init__(self) -> None:
        if (self.budget_ms is None) == (self.budget_ratio is None):
            raise ConfigError("give exactly one of --budget-ms X or --budget-ratio R")
        _check_budget(self.budget_ms, self.budget_ratio)
        super().__post_init__()
        if self.finetune_epochs < 0:
            raise ConfigError(f"--finetune-epochs must be >= 0, got {self.finetune_epochs}")
        self._positive("calibration_batches", "finetune_lr")
        if self.margin is not None and not 0 <= self.margin < 1:
            raise ConfigError(f"--margin must be in [0, 1), got {self.margin}")
