"""Every setting has one source: each config field is a flag of its subcommand, with the field's default."""

from __future__ import annotations

import dataclasses

import pytest

from autoprune._cli_args import build_parser
from autoprune._cli_options import config_from
from autoprune.config import AdaptConfig, FitConfig, ProtocolConfig, SamplingConfig, SearchConfig, TrainConfig

# subcommand, the least a user types, and the configs its options make
CASES = [
    (["train", "resnet20", "--out", "x.pt"], [TrainConfig]),
    (["profile", "resnet20"], [SamplingConfig, ProtocolConfig]),
    (["fit", "p.parquet", "--out", "p.pt"], [FitConfig]),
    (
        [
            "search",
            "resnet20",
            "--checkpoint",
            "c",
            "--data",
            "d",
            "--predictor",
            "p",
            "--out",
            "o",
            "--budget-ratio",
            "0.5",
        ],
        [SearchConfig],
    ),
    (
        [
            "adapt",
            "resnet20",
            "--checkpoint",
            "c",
            "--reference",
            "r",
            "--data",
            "d",
            "--predictor",
            "p",
            "--budget-ratio",
            "0.5",
            "--out",
            "o",
        ],
        [AdaptConfig],
    ),
]


@pytest.mark.parametrize(("argv", "configs"), CASES, ids=[c[0][0] for c in CASES])
def test_every_config_field_is_a_flag_with_the_fields_default(argv: list[str], configs: list[type]) -> None:
    args = build_parser().parse_args(argv)
    for cls in configs:
        internal = getattr(cls, "INTERNAL", {})
        missing = [
            f.name for f in dataclasses.fields(cls) if f.name not in internal and not hasattr(args, f.name)
        ]
        assert not missing, (
            f"{cls.__name__} fields with no flag (add one, or declare them INTERNAL): {missing}"
        )
        given = {"budget_ratio": 0.5} if "--budget-ratio" in argv else {}
        assert config_from(cls, args) == cls(**given)


def test_every_option_of_every_subcommand_has_help() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.choices and "search" in a.choices)
    for name, p in sub.choices.items():
        bare = [a.option_strings[0] for a in p._actions if a.option_strings and not a.help]
        assert not bare, f"autoprune {name}: options with no help: {bare}"


def test_a_flag_sets_its_field() -> None:
    args = build_parser().parse_args(
        ["train", "resnet20", "--out", "x.pt", "--epochs", "0.5", "--weight-decay", "0"]
    )
    assert config_from(TrainConfig, args) == TrainConfig(epochs=0.5, weight_decay=0.0)
    args = build_parser().parse_args(["profile", "resnet20", "--no-boundary", "--max-round-iqr", "0.2"])
    assert config_from(SamplingConfig, args).boundary is False
    assert config_from(ProtocolConfig, args).max_round_iqr == 0.2
