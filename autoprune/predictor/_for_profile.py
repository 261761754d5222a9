"""The features every predictor of a profile sees, and the check that its lookup table belongs to it."""

from __future__ import annotations

from autoprune.errors import ConfigError, ModelError, ProfileError
from autoprune.latency import Profile, lut_path, mismatch, read_lut
from autoprune.latency.compat import PROFILE_LUT_KEYS
from autoprune.models import create_model
from autoprune.predictor.features import Features, layers_of


def features_for_profile(prof: Profile, *, model: str | None = None) -> Features:
    """Its lookup table's layers and latencies when the profile has a table beside it, otherwise the
    layers of ``model`` (default: the profiled spec)."""
    table_path = lut_path(prof.path)
    if table_path.exists():
        table = read_lut(table_path)
        differs = mismatch(prof.meta, table.meta, PROFILE_LUT_KEYS)
        if differs:
            raise ProfileError(
                f"lookup table '{table_path}' was measured with another {differs} than its profile: "
                "re-run autoprune profile ... --lut, or move the table away"
            )
        return Features(prof.groups, table.layers, table.tables())
    spec = model or prof.meta["model"]
    if not spec:
        raise ConfigError("the profile does not name its model: pass --model SPEC to derive MACs")
    try:
        net = create_model(spec, num_classes=prof.meta["num_classes"])
    except ModelError as exc:
        raise ModelError(f"{exc} (fit builds the profiled model to derive MACs: pass --model SPEC)") from exc
    return Features(prof.groups, layers_of(net, prof.meta["input_shape"], prof.groups))
