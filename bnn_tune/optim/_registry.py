"""Optimizer registry (timm-style): a frozen spec per optimizer, ``register/get/list_optimizers``.

Third-party packages register optimizers through the entry-point group ``bnn_tune.optimizers``;
each entry point names a callable that is called once (with no arguments) and registers its
optimizers with :func:`register`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch

__all__ = ["OptimizerSpec", "get", "list_optimizers", "register"]

ENTRY_POINT_GROUP = "bnn_tune.optimizers"


def _default_make(cls: type[torch.optim.Optimizer]) -> Callable[..., torch.optim.Optimizer]:
    def make(params: Iterable[torch.Tensor], hparams: Mapping[str, Any], **_context: Any) -> torch.optim.Optimizer:
        return cls(params, **hparams)

    return make


def _signature_defaults(cls: type) -> dict[str, Any]:
    out = {}
    init = cls.__init__  # type: ignore[misc]
    for name, p in inspect.signature(init).parameters.items():
        if name in ("self", "params") or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or name.startswith("_"):
            continue
        if name in ("foreach", "maximize", "differentiable", "capturable"):
            continue
        out[name] = p.default if p.default is not inspect.Parameter.empty else None
    return out


@dataclass(frozen=True)
class OptimizerSpec:
    """How to build one binary optimizer from a flat config.

    Attributes:
        name: registry key (lowercase), the config's ``optimizer`` value.
        cls: the :class:`torch.optim.Optimizer` subclass that updates the binary parameters.
        hyperparameters: config key -> default for every hyperparameter the optimizer accepts.
            These (and ``<key>_schedule``) are the only optimizer keys a config may contain.
        make: ``make(params, hparams, *, total_steps, steps_per_epoch, epochs)`` -> optimizer;
            translates config coordinates (e.g. BNEW's ``beta_T``) into constructor arguments.
        prepare_model: optional ``prepare_model(model, hparams)`` run before training (e.g. Bop
            binarizes the initial weights, BMD installs its tanh quantizer).
        description, reference: shown by ``bnn-tune`` and the README table.
        schedulable: the config keys that may take a ``<key>_schedule``; each drives exactly the
            binary optimizer's ``param_groups`` entry named by ``group_keys`` (``lr_schedule`` drives
            the real-valued parameters' Adam, never the binary optimizer).
        group_keys: config key -> ``param_groups`` key where they differ (e.g. ``latent_lr`` -> ``lr``).
    """

    name: str
    cls: type[torch.optim.Optimizer]
    hyperparameters: Mapping[str, Any]
    make: Callable[..., torch.optim.Optimizer]
    prepare_model: Callable[..., None] | None = None
    description: str = ""
    reference: str = ""
    schedulable: tuple[str, ...] = field(default=())
    group_keys: Mapping[str, str] = field(default_factory=dict)

    def group_key(self, key: str) -> str:
        """The ``param_groups`` key that config hyperparameter ``key`` sets."""
        return self.group_keys.get(key, key)

    def validate(self, hparams: Mapping[str, Any], **context: Any) -> torch.optim.Optimizer:
        """Raise ``ValueError`` (naming the value and range) if ``hparams`` are invalid; returns the
        optimizer built on a dummy parameter (its ``param_groups`` show which keys a schedule can drive)."""
        dummy = torch.nn.Parameter(torch.zeros(2))
        context.setdefault("total_steps", 1000)
        context.setdefault("steps_per_epoch", 10)
        context.setdefault("epochs", 100)
        context.setdefault("lr", 1e-3)
        return self.make([dummy], dict(hparams), **context)


_REGISTRY: dict[str, OptimizerSpec] = {}
_ENTRY_POINTS_LOADED = False
_RESERVED_KEYS: frozenset[str] = frozenset()


def _check_clash(name: str, hp: Mapping[str, Any]) -> None:
    clash = sorted(k for k in hp if k in _RESERVED_KEYS or k.endswith("_schedule"))
    if clash:
        raise ValueError(
            f"Hyperparameter names {clash} of optimizer {name!r} clash with common config keys "
            f"(or end in '_schedule'); a config value could not reach the optimizer. Rename them "
            f"(e.g. 'latent_lr' for a binary optimizer's own learning rate)."
        )


def reserve_config_keys(keys: Iterable[str]) -> None:
    """Declare the config keys every trial has (``bnn_tune.config`` calls this once, at import).

    An optimizer hyperparameter with one of these names could never receive its config value, so
    :func:`register` rejects it. The config stage sits above this registry (it validates configs
    against it), hence the keys are handed down rather than imported.
    """
    global _RESERVED_KEYS
    _RESERVED_KEYS = _RESERVED_KEYS | frozenset(keys)
    for spec in list(_REGISTRY.values()):
        _check_clash(spec.name, spec.hyperparameters)


def register(
    name: str,
    cls: type[torch.optim.Optimizer],
    *,
    hyperparameters: Mapping[str, Any] | None = None,
    make: Callable[..., torch.optim.Optimizer] | None = None,
    prepare_model: Callable[..., None] | None = None,
    description: str = "",
    reference: str = "",
    schedulable: Iterable[str] | None = None,
    group_keys: Mapping[str, str] | None = None,
    overwrite: bool = False,
) -> OptimizerSpec:
    """Register a binary optimizer under ``name``.

    Args:
        name: lowercase registry key.
        cls: optimizer class for the binary parameters.
        hyperparameters: config key -> default; inferred from ``cls.__init__`` when omitted.
        make: builder translating config values to constructor arguments (default ``cls(params, **h)``).
        prepare_model: hook run on the model before training.
        description, reference: documentation.
        schedulable: hyperparameters that may take a ``<key>_schedule`` (default: all numeric ones);
            each must be (via ``group_keys``) a key of the optimizer's ``param_groups``, which config
            validation checks.
        group_keys: config key -> ``param_groups`` key where the names differ.
        overwrite: replace an existing registration instead of raising.

    Example:
        >>> from bnn_tune import optim
        >>> spec = optim.get("latent_adam")
        >>> sorted(spec.hyperparameters)[:2]
        ['betas', 'clip_value']
    """
    if not isinstance(name, str) or not name or name != name.lower():
        raise ValueError(f"Optimizer names must be non-empty lowercase strings, but got name={name!r}.")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"An optimizer named {name!r} is already registered; pass overwrite=True to replace it.")
    hp = dict(_signature_defaults(cls) if hyperparameters is None else hyperparameters)
    _check_clash(name, hp)
    if schedulable is None:
        schedulable = [k for k, v in hp.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    schedulable = tuple(schedulable)
    unknown = sorted(set(schedulable) - set(hp))
    if unknown:
        raise ValueError(
            f"`schedulable` of optimizer {name!r} names {unknown}, which are not its hyperparameters "
            f"{sorted(hp)} ('lr' is the real-valued parameters' rate; call the binary optimizer's own rate "
            f"e.g. 'latent_lr')."
        )
    spec = OptimizerSpec(
        name=name,
        cls=cls,
        hyperparameters=MappingProxyType(hp),
        make=make or _default_make(cls),
        prepare_model=prepare_model,
        description=description,
        reference=reference,
        schedulable=schedulable,
        group_keys=MappingProxyType(dict(group_keys or {})),
    )
    _REGISTRY[name] = spec
    return spec


def _load_entry_points() -> None:
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()()
        except Exception as exc:  # a broken plugin must not break the built-ins
            import warnings

            warnings.warn(f"bnn_tune: optimizer entry point {ep.name!r} failed to load: {exc}", stacklevel=2)


def list_optimizers() -> list[str]:
    """Sorted names of every registered optimizer."""
    _load_entry_points()
    return sorted(_REGISTRY)


def get(name: str) -> OptimizerSpec:
    """The :class:`OptimizerSpec` registered under ``name``.

    Raises:
        ValueError: "Unknown optimizer 'bopp'. Available: ['bmd', 'bnew', 'bop', ...]."
    """
    _load_entry_points()
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        import difflib

        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"Unknown optimizer {name!r}. Available: {list_optimizers()}.{hint}") from None
