"""Deferred imports of optional heavy dependencies, with an error that says how to fix it."""

from __future__ import annotations

import importlib
from types import ModuleType

_EXTRAS = {"ray": "ray", "optuna": "optuna", "optuna_integration": "optuna", "torchvision": "vision",
           "matplotlib": "notebooks", "plotly": "notebooks"}


def require(module: str, *, feature: str = "") -> ModuleType:
    """Import ``module`` or raise ImportError naming the ``pip install`` that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        extra = _EXTRAS.get(top, "all")
        what = f" for {feature}" if feature else ""
        raise ImportError(
            f"{top!r} is needed{what} but is not installed: pip install 'bnn-tune[{extra}]' ({exc})"
        ) from exc
