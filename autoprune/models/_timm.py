"""``timm:NAME``: an untrained timm model (``pip install "autoprune[timm]"``), imported only when asked."""

from __future__ import annotations

import difflib

from torch import nn

from autoprune.errors import ConfigError, ModelError

INSTALL_HINT = 'pip install "autoprune[timm]"'


def timm_model(name: str, num_classes: int) -> nn.Module:
    """Build timm's ``name`` untrained with ``num_classes`` outputs; nothing is ever downloaded."""
    try:
        import timm
    except ImportError as exc:  # absent, or blocked (sys.modules["timm"] = None)
        raise ConfigError(f"model 'timm:{name}' needs timm, which is not installed: {INSTALL_HINT}") from exc
    if not timm.is_model(name):  # is_model also takes a pretrained tag: "resnet18.a1_in1k"
        raise ModelError(f"timm has no model '{name}': {_suggest(name, timm.list_models())}")
    # pretrained=False: the user's --checkpoint supplies trained weights.
    return timm.create_model(name, pretrained=False, num_classes=num_classes)


def _suggest(name: str, known: list[str]) -> str:
    """What to use instead of an unknown ``name``: the closest timm names, else where to look them up."""
    base = name.split(".", 1)[0].lower()
    close = difflib.get_close_matches(base, known, n=3, cutoff=0.6)
    close += [k for k in known if base and base in k and k not in close][: 3 - len(close)]
    if close:
        return f"did you mean {', '.join(close)}? (all names: timm.list_models())"
    return "use one of timm.list_models()"
