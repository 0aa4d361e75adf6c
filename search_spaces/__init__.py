"""Search spaces for BNN optimizers, in the coordinates that matter.

One module per optimizer (``bop``, ``bop2``, ``latent_adam``, ``bmd``, ``bnew``, ``filters``), each with

* ``suggest(trial) -> dict``: a pure Optuna define-by-run function (only ``trial.suggest_*`` calls, flat
  config out, ``"optimizer"`` included; every sampled name is a config key), usable unchanged as an
  Optuna objective's space and as Ray's ``OptunaSearch(space=suggest)``;
* ``naive_suggest(trial)``: the same optimizer searched as a real-valued user would (lr / weight decay /
  init scale as independent dimensions), the baseline the reinterpretation is measured against;
* ``ray_space(**overrides) -> dict``: the space as Ray Tune domains (ray imported lazily).

The reinterpretation is the point: Bop is searched in gamma/tau, BNEW in beta*T, latent-weight methods as
gradient filters -- never learning rate and init scale as independent dimensions (Bop paper, Theorem 1).
:mod:`bnn_tune.search_spaces.presets` stores tuned configurations with their provenance.

Example:
    >>> import search_spaces
    >>> search_spaces.list_spaces()
    ['bmd', 'bnew', 'bop', 'bop2', 'filters', 'latent_adam']
    >>> search_spaces.get("bop").NAME
    'bop'
"""

from __future__ import annotations

import difflib
import importlib
from types import ModuleType

from . import presets

__all__ = ["get", "list_spaces", "presets"]

_SPACES = ("bmd", "bnew", "bop", "bop2", "filters", "latent_adam")
# optimizer registry names that differ from the module name
_ALIASES = {"filter": "filters"}


def list_spaces() -> list[str]:
    """Sorted names of the built-in search spaces (``search_spaces.get`` also accepts the optimizer
    registry name ``"filter"`` for ``"filters"``)."""
    return list(_SPACES)


def get(name: str) -> ModuleType:
    """The search-space module called ``name`` (or registered for optimizer ``name``).

    Raises:
        ValueError: "Unknown search space 'bopp'. Available: ['bmd', 'bnew', 'bop', ...]. Did you mean 'bop'?"
    """
    key = _ALIASES.get(name, name) if isinstance(name, str) else name
    if key not in _SPACES:
        close = difflib.get_close_matches(str(name), [*_SPACES, *_ALIASES], n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"Unknown search space {name!r}. Available: {list(_SPACES)}.{hint}")
    return importlib.import_module(f"{__name__}.{key}")
