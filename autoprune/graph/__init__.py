"""Channel groups over Torch-Pruning's DependencyGraph and the ``widths`` currency applied to models."""

from __future__ import annotations

from autoprune.graph._groups import ChannelGraph, ChannelGroup, Criterion, Widths
from autoprune.graph._widths import (
    allowed_widths,
    apply_widths,
    check_widths,
    count_macs_params,
    dense_widths,
    keep_top,
    measure_widths,
    narrowest_widths,
    pruned_copy,
    snap_width,
)

__all__ = [
    "ChannelGraph",
    "ChannelGroup",
    "Criterion",
    "Widths",
    "allowed_widths",
    "apply_widths",
    "check_widths",
    "count_macs_params",
    "dense_widths",
    "keep_top",
    "measure_widths",
    "narrowest_widths",
    "pruned_copy",
    "snap_width",
]
