"""Errors a user can cause and fix. The CLI prints their message on one line and exits with 2.

Every message names the fix ("... : pass --checkpoint FILE", "... : run autoprune profile first").
Anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations


class AutopruneError(Exception):
    """Base class for user-fixable errors; ``str(err)`` is one line that says what to do."""


class ConfigError(AutopruneError):
    """A flag or setting has a value autoprune cannot use."""


class ModelError(AutopruneError):
    """A model spec or checkpoint cannot be resolved or does not fit the model."""


class DataError(AutopruneError):
    """A dataset spec is unknown, or its files are missing or malformed."""


class ProfileError(AutopruneError):
    """A latency profile is missing, malformed, or was measured under other settings."""


class BindingError(AutopruneError):
    """An artifact (predictor, profile) belongs to another model, device or backend."""


class BudgetError(AutopruneError):
    """A latency budget cannot be met."""


class ExportError(AutopruneError):
    """An exported model does not reproduce the torch model, or cannot be written."""
