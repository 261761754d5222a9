"""autoprune: give it a trained CNN and a latency budget for a device; get back the most accurate
pruned network that meets the budget.

The stages are subpackages (``models``, ``data``, ``graph``, ``latency``, ``predictor``, ``search``,
``prune``, ``export``, ``report``); ``autoprune.api`` holds one function per CLI subcommand. Importing
this package initialises neither CUDA nor TensorRT, and imports no stage until it is used.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
