"""One function per CLI subcommand. Each composes the stages, validates what a user can get wrong
before long work starts, and writes its outputs atomically. The stage logic lives in its stage."""

from __future__ import annotations

from autoprune.api._adapt import AdaptResult, adapt
from autoprune.api._demo import DEMO_DATA, DEMO_MODEL, DEMO_PROTOCOL, DemoResult, demo
from autoprune.api._export import export
from autoprune.api._fit import FitResult, fit
from autoprune.api._profile import merge_profiles, profile
from autoprune.api._search import SearchResult, search
from autoprune.api._train import TrainResult, train

__all__ = [
    "DEMO_DATA",
    "DEMO_MODEL",
    "DEMO_PROTOCOL",
    "AdaptResult",
    "DemoResult",
    "FitResult",
    "SearchResult",
    "TrainResult",
    "adapt",
    "demo",
    "export",
    "fit",
    "merge_profiles",
    "profile",
    "search",
    "train",
]
