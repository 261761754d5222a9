"""The strategy plug-in kind: a small ABC, the problem every strategy is given, and a name registry."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import optuna
from torch import Tensor, nn
from torch.utils.data import Dataset

from autoprune._registry import Registry
from autoprune.config import SearchConfig
from autoprune.errors import ConfigError
from autoprune.graph import Widths
from autoprune.latency import Timing
from autoprune.search.allocation import ladder, scaled_down
from autoprune.search.space import WidthSpace
from autoprune.search.study import Candidate, Evaluate


@dataclass(frozen=True)
class DenseNetwork:
    """The searched network itself, for a strategy that trains it (``gates``); the rest of the problem
    sees networks only as widths. ``latency`` is the predictor's latency (ms, in the search's conditions)
    of kept fractions per group (..., groups, in ``space.groups`` order), differentiable, or None when the
    predictor (kind ``predictor``) is not. ``accuracy(module, widths, scores)`` prunes a copy of
    ``module`` (the dense network, retrained) to ``widths`` keeping each group's highest ``scores``,
    recalibrates BatchNorm and scores it on the validation split. Trained weights go under ``work_dir``."""

    module: nn.Module  # never modified: train a copy
    example: Tensor  # one input (batch 1)
    train: Dataset
    epochs: float  # training per trial (--finetune-epochs)
    lr: float
    seed: int
    latency: Callable[[Tensor], Tensor] | None
    predictor: str
    accuracy: Callable[[nn.Module, Widths, Mapping[str, Tensor]], float]
    work_dir: Path
    augment: bool = False  # its fine-tunes augment (crop + flip), as the search's own do

    def trial_file(self, strategy: str, study: str, trial: int) -> Path:
        """Where ``strategy`` keeps what trial ``trial`` of ``study`` trained (``save_start``)."""
        return self.work_dir / strategy / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', study)}-trial{trial}.pt"


@dataclass(frozen=True)
class SearchProblem:
    """What a strategy searches with: the width grid, the budget and every way to judge a network.

    ``budget_ms`` is ``math.inf`` for a search with no latency budget, only an accuracy tolerance:
    ``max_accuracy_drop`` percentage points of validation accuracy below ``dense_accuracy`` (a fraction;
    None: the strategy scores the dense network itself). Only a strategy with ``tolerance`` takes one."""

    space: WidthSpace
    budget_ms: float  # math.inf: no budget
    predict_ms: Callable[[Widths], float]  # the latency predictor (or its upper confidence bound)
    evaluate: Evaluate  # validation accuracy after recovery and a short fine-tune
    measure: Callable[[list[Widths]], list[Timing]]  # the real device, interleaved
    macs: Callable[[Widths], float]
    scores: Mapping[str, Tensor]  # channel importance per group (the criterion on the dense network)
    tolerance: float = 0.03  # the protocol's tolerance: the least margin a measurement needs
    network: DenseNetwork | None = None  # for a strategy that trains the network itself
    max_accuracy_drop: float | None = None  # percentage points of validation accuracy
    dense_accuracy: float | None = None  # the dense network's validation accuracy (fraction)
    # The cheap accuracy estimate (adaptive BatchNorm: statistics re-estimated on fixed training batches,
    # accuracy on a fixed validation subset; ``autoprune.search.proxy``), for a strategy that screens many.
    proxy: Callable[[Widths], float] | None = None
    # ``finetune(widths, epochs, seed)``: validation accuracy after pruning, recalibration and a fine-tune
    # of ``epochs`` with data order ``seed``: the same for every network it is given (a fair rerank).
    finetune: Callable[[Widths, float, int], float] | None = None
    val_size: int | None = None  # validation items behind an accuracy: its binomial noise
    predict_many: Callable[[list[Widths]], Sequence[float]] | None = None  # predict_ms, batched
    # Several targets (``search.targets``): each one's predicted latency minus its budget, by target
    # name; ``predict_ms`` is then the binding latency under ``budget_ms``. None: one target.
    excess: Callable[[Widths], Mapping[str, float]] | None = None
    budgets: Mapping[str, float] | None = None  # each target's budget (ms) by name, recorded on the study

    def predict_batch(self, widths: list[Widths]) -> list[float]:
        """``predict_ms`` of many networks, in one call where the problem has ``predict_many``."""
        if self.predict_many is not None:
            return [float(v) for v in self.predict_many(widths)]
        return [float(self.predict_ms(w)) for w in widths]

    def constraints(self, widths: Widths, predicted_ms: float | None = None) -> dict[str, float]:
        """The latency constraints of ``widths`` (<= 0 holds): ``budget``, predicted minus the budget
        (``predicted_ms`` when the caller has it), or one ``budget:TARGET`` per target."""
        if self.excess is not None:
            return {f"budget:{name}": float(v) for name, v in self.excess(widths).items()}
        predicted = float(self.predict_ms(widths)) if predicted_ms is None else float(predicted_ms)
        return {"budget": predicted - self.budget_ms}

    def constrain(self, trial: optuna.Trial, widths: Widths, predicted_ms: float | None = None) -> bool:
        """Set ``constraints`` on ``trial`` (TPE and NSGA-II read them); whether all hold."""
        values = self.constraints(widths, predicted_ms)
        for name, value in values.items():
            trial.set_constraint(name, value)
        return all(v <= 0 for v in values.values())


@dataclass(frozen=True)
class StrategyOption:
    """A setting of one strategy, given on the command line as ``flag`` (e.g. ``--pfp-eps``) and to its
    constructor as the keyword ``name`` (e.g. ``eps``)."""

    flag: str
    name: str
    type: Callable[[str], Any]
    help: str


FALLBACKS = StrategyOption(
    "--fallbacks", "fallbacks", int,
    "knapsack, uniform, gates, droppruning, halp, screen: narrower networks proposed after each chosen "
    "one, measured only when those before them measure over the budget",
)  # fmt: skip


@dataclass(frozen=True)
class Fallbacks:
    """The narrower networks a strategy's ranking ends in (``--fallbacks``): ``count`` of them, each
    predicted ``step`` of the budget further below it, measured only when those before them measure over
    the budget (so a network fits even when the winner does not)."""

    count: int = 8
    step: float = 0.03

    def __post_init__(self) -> None:
        if self.count < 0:
            raise ConfigError(f"--fallbacks must be >= 0, got {self.count}: try 8")
        if not 0 < self.step < 1:
            raise ConfigError(f"the fallbacks' step must be in (0, 1), got {self.step}")

    def ladder(
        self, problem: SearchProblem, value: Mapping[str, Mapping[int, float]], *, start: Widths | None = None
    ) -> list[tuple[Widths, float]]:
        """The widest network along ``value``'s greedy path predicted within the budget, then the fallbacks
        on the same path (``allocation.ladder``)."""
        return ladder(problem.space, value, problem.predict_ms, budget_ms=problem.budget_ms, start=start,
                      fallbacks=self.count, step=self.step)  # fmt: skip

    def scaled(self, problem: SearchProblem, widths: Widths) -> list[tuple[Widths, float]]:
        """The fallbacks of ``widths``' shape, scaled down alike in every group (``scaled_down``)."""
        return scaled_down(problem.space, widths, problem.predict_ms, budget_ms=problem.budget_ms,
                           fallbacks=self.count, step=self.step)  # fmt: skip


@dataclass(frozen=True)
class StudySettings:
    """How a strategy's Optuna study is created: sampler, directions and pruner."""

    sampler: optuna.samplers.BaseSampler
    directions: tuple[str, ...] = ("maximize",)
    pruner: optuna.pruners.BasePruner | None = None


class SearchStrategy(ABC):
    """Finds networks within the budget and ranks them, most preferred first. Everything it trains is
    recorded as a trial of ``study``, so a rerun resumes it; the budget is recorded by ``run_strategy``."""

    name: ClassVar[str]
    evaluates: ClassVar[bool] = True  # trains networks while searching: its trials have an accuracy
    needs_gradients: ClassVar[bool] = False  # needs a differentiable predictor (``DenseNetwork.latency``)
    options: ClassVar[tuple[StrategyOption, ...]] = ()  # its settings: command-line flags and keywords
    tolerance: ClassVar[bool] = False  # honours an accuracy tolerance (--max-accuracy-drop)
    default_trials: ClassVar[int] = 30  # --trials when not given
    trial_means: ClassVar[str] = "networks trained"  # what --trials counts, for --help

    @classmethod
    def from_config(cls, config: SearchConfig) -> SearchStrategy:
        """The strategy as ``autoprune search`` configures it: ``config.strategy_options`` are keywords
        of its constructor (``options``). A strategy with other settings of ``config`` overrides this."""
        cls.check_tolerance(config)
        if config.objectives != 1:
            raise ConfigError(
                f"--objectives {config.objectives}: strategy '{cls.name}' has one objective; "
                "use --strategy optuna or flops"
            )
        return cls(**cls.given_options(config))

    @classmethod
    def check_tolerance(cls, config: SearchConfig) -> None:
        """Refuse ``--max-accuracy-drop`` unless this strategy honours an accuracy tolerance."""
        if config.max_accuracy_drop is not None and not cls.tolerance:
            able = [s for s in list_strategies() if strategy_class(s).tolerance]
            raise ConfigError(
                f"--strategy {cls.name} searches under a latency budget and cannot honour "
                f"--max-accuracy-drop: use --strategy {' or '.join(able)} (or drop --max-accuracy-drop)"
            )

    @classmethod
    def network_of(cls, problem: SearchProblem) -> DenseNetwork:
        """The network a strategy that trains it is given, refused in one line when there is none."""
        if problem.network is None:
            raise ConfigError(
                f"strategy '{cls.name}' trains the network itself and was given none: pass "
                "SearchProblem.network (autoprune search does)"
            )
        return problem.network

    @classmethod
    def given_options(cls, config: SearchConfig) -> dict[str, Any]:
        """``config.strategy_options``, refused in one line when one is not this strategy's."""
        own = {o.name for o in cls.options}
        for name in config.strategy_options:
            if name not in own:
                owners = [s for s in list_strategies() if name in {o.name for o in strategy_class(s).options}]
                flags = [o.flag for s in owners for o in strategy_class(s).options if o.name == name]
                what = f"{flags[0]} is an option of --strategy {' or '.join(owners)}" if owners else name
                raise ConfigError(f"{what}, not of '{cls.name}': drop it or pick that strategy")
        return dict(config.strategy_options)

    def study_settings(self, *, seed: int, trials: int) -> StudySettings:
        return StudySettings(optuna.samplers.RandomSampler(seed=seed))

    def keep_settings(self, study: optuna.Study, settings: dict[str, Any]) -> None:
        """Record this strategy's ``settings`` on a new study; refuse a rerun of the study with others."""
        recorded = study.user_attrs.get(self.name)
        if recorded is None:
            study.set_user_attr(self.name, settings)
        elif recorded != settings:
            raise ConfigError(
                f"{self.name}: this study ran with {recorded}, not {settings}: pass those options again or a "
                "new --study"
            )

    @abstractmethod
    def run(
        self,
        problem: SearchProblem,
        *,
        study: optuna.Study,
        trials: int,
        on_trial: Callable[[int, int], None] | None = None,
    ) -> list[Candidate]:
        """Ranked candidates, each on the grid and predicted (or measured) within the budget."""


_S = "autoprune.search.strategies"
STRATEGIES: Registry[SearchStrategy] = Registry(
    "search strategy",
    {
        "optuna": f"{_S}.optuna:OptunaStrategy",
        "flops": f"{_S}.flops:FlopsStrategy",
        "knapsack": f"{_S}.knapsack:KnapsackStrategy",
        "uniform": f"{_S}.uniform:UniformStrategy",
        "gates": f"{_S}.gates:GatesStrategy",
        "droppruning": f"{_S}.droppruning:DropPruningStrategy",
        "playprune": f"{_S}.playprune:PlayPruneStrategy",
        "pfp": f"{_S}.pfp:PFPStrategy",
        "screen": f"{_S}.screen:ScreenStrategy",
        "halp": f"{_S}.halp:HalpStrategy",
    },
)
register_strategy = STRATEGIES.register
list_strategies = STRATEGIES.names
strategy_class = STRATEGIES.get


def strategy_options() -> dict[str, StrategyOption]:
    """Every strategy's options by flag (strategies may share one, with the same keyword)."""
    out: dict[str, StrategyOption] = {}
    for name in list_strategies():
        for option in strategy_class(name).options:
            if out.setdefault(option.flag, option).name != option.name:
                raise TypeError(f"{option.flag} means two keywords: {out[option.flag].name}, {option.name}")
    return out


def get_strategy(name: str, **options: Any) -> SearchStrategy:
    """The strategy ``name`` built with its own keyword options."""
    return STRATEGIES.create(name, **options)
