"""Export formats, a plug-in kind like the others (``autoprune._registry``): an ``ExportFormat`` writes a
pruned network to one file and checks it against torch; ``autoprune export --format NAME`` lists them."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

from autoprune._registry import Registry
from autoprune.prune import PrunedModel


class Exported(Protocol):
    """What every format's export returns: the file, and how far its output is from torch's."""

    @property
    def path(self) -> Path: ...
    @property
    def max_abs_diff(self) -> float: ...
    @property
    def tolerance(self) -> float: ...


@dataclass(frozen=True)
class ExportOptions:
    """The export's settings a format may use (the ONNX format uses none of them): the engine's
    precision, largest batch and builder workspace, whether to measure it against ``budget_ms`` (default:
    the search's), int8 calibration data and batches, and the GPU."""

    precision: str | None = None
    max_batch: int | None = None
    workspace_mib: int | None = None
    verify: bool = False
    budget_ms: float | None = None
    calibration_data: str | None = None
    calibration_batches: int = 16
    device: int | str | None = None


class ExportFormat(ABC):
    name: ClassVar[str]
    help: ClassVar[str]  # one line for --help

    @abstractmethod
    def default_path(self, pruned: PrunedModel, pruned_file: Path, options: ExportOptions) -> Path:
        """Where the file goes without ``--out`` (beside ``pruned_file``)."""

    @abstractmethod
    def export(self, pruned: PrunedModel, path: Path, options: ExportOptions) -> Exported:
        """Write ``pruned`` to ``path`` (atomically), checked against torch, or raise and write nothing."""


FORMATS: Registry[ExportFormat] = Registry(
    "export format",
    {
        "onnx": "autoprune.export.onnx:OnnxFormat",
        "tensorrt": "autoprune.export._trt_format:TensorRTFormat",
    },
)
register_format = FORMATS.register


def list_formats() -> list[str]:
    return FORMATS.names()


def get_format(name: str) -> ExportFormat:
    return FORMATS.create(name)
