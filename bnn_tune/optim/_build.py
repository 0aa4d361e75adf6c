"""``build(model, config)``: one optimizer object for a whole BNN.

Binary parameters (:func:`bnn_tune.nn.is_binary_parameter`) go to the configured binary optimizer;
every other parameter (batch-norm, biases, real first/last layers) goes to Adam with the config's
``lr``. The two live in one :class:`CombinedOptimizer` whose ``param_groups`` are the union of both
(so schedulers see every group), with step hooks and ``state_dict()/load_state_dict()``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn

from ..nn import is_binary_parameter
from ._registry import get

__all__ = ["CombinedOptimizer", "build", "route_parameters"]


class CombinedOptimizer(torch.optim.Optimizer):
    """Several optimizers over disjoint parameter sets, stepped together.

    Args:
        optimizers: name -> optimizer; names key the ``state_dict``.
    """

    def __init__(self, optimizers: Mapping[str, torch.optim.Optimizer]) -> None:
        if not optimizers:
            raise ValueError("CombinedOptimizer needs at least one optimizer.")
        seen: dict[int, str] = {}
        for name, opt in optimizers.items():
            for g in opt.param_groups:
                for p in g["params"]:
                    if id(p) in seen:
                        raise ValueError(
                            f"A parameter of shape {tuple(p.shape)} is claimed by both {seen[id(p)]!r} and {name!r}."
                        )
                    seen[id(p)] = name
        self.optimizers = dict(optimizers)
        all_params = [p for opt in self.optimizers.values() for g in opt.param_groups for p in g["params"]]
        super().__init__(all_params, defaults={})
        # Share the sub-optimizers' group dicts so that schedulers/hyperparameter edits reach them.
        self.param_groups = [g for opt in self.optimizers.values() for g in opt.param_groups]

    @property
    def binary(self) -> torch.optim.Optimizer:
        return self.optimizers["binary"]

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for opt in self.optimizers.values():
            opt.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        return {name: opt.state_dict() for name, opt in self.optimizers.items()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # type: ignore[override]
        missing = set(self.optimizers) ^ set(state_dict)
        if missing:
            raise ValueError(
                f"Optimizer state has parts {sorted(state_dict)}, but this optimizer has {sorted(self.optimizers)}."
            )
        for name, opt in self.optimizers.items():
            # torch's load_state_dict replaces the group dicts; copy the loaded values back into the
            # original dicts so that this object's param_groups and any HyperparameterScheduler
            # holding them keep driving the live optimizer after a resume.
            groups = opt.param_groups
            opt.load_state_dict(state_dict[name])
            for old, new in zip(groups, opt.param_groups):
                old.update(new)
            opt.param_groups = groups

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={type(v).__name__}" for k, v in self.optimizers.items())
        return f"CombinedOptimizer({inner})"


def route_parameters(
    params: nn.Module | Iterable[tuple[str, torch.Tensor]],
    rules: Mapping[str, Callable[[torch.Tensor], bool]],
) -> dict[str, list[torch.Tensor]]:
    """Split parameters between optimizers by predicates, strictly (larq ``CaseOptimizer`` style).

    Every parameter is tested against every rule. A parameter that two rules claim is an error (it
    would be updated twice); a parameter that no rule claims is left out with a warning (it would
    silently never train).

    Args:
        params: a model (its ``named_parameters()``) or ``(name, parameter)`` pairs.
        rules: part name -> predicate; the order of the result follows ``rules``.

    Returns:
        part name -> the parameters it claimed (possibly empty), in model order.

    Raises:
        ValueError: when a parameter is claimed by more than one rule.

    Example:
        >>> from bnn_tune.nn import BinaryLinear, is_binary_parameter
        >>> layer = BinaryLinear(4, 2, bias=True)
        >>> parts = route_parameters(layer, {"binary": is_binary_parameter,
        ...                                  "real": lambda p: not is_binary_parameter(p)})
        >>> [len(v) for v in parts.values()]
        [1, 1]
    """
    named = list(params.named_parameters()) if isinstance(params, nn.Module) else list(params)
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in rules}
    unclaimed = []
    for pname, p in named:
        owners = [part for part, rule in rules.items() if rule(p)]
        if len(owners) > 1:
            raise ValueError(f"Parameter {pname!r} is claimed by more than one optimizer: {owners}.")
        if owners:
            parts[owners[0]].append(p)
        else:
            unclaimed.append(pname)
    if unclaimed:
        warnings.warn(
            f"{len(unclaimed)} parameters are claimed by no optimizer and will not be trained: {unclaimed}.",
            stacklevel=2,
        )
    return parts


_PART_DEFAULTS = {"epochs": 20, "lr": 1e-3}  # TrialConfig's defaults; tests/optim/test_registry.py checks


def _optimizer_part(config: Any) -> tuple[str, Mapping[str, Any], int, float]:
    """``(optimizer, hyperparameters, epochs, lr)`` of a TrialConfig or of a dict holding only those keys."""
    if not isinstance(config, Mapping):  # a TrialConfig (this stage sits below bnn_tune.config)
        return config.optimizer, config.optimizer_params, int(config.epochs), float(config.lr)
    if "optimizer" not in config:
        raise ValueError("build() needs the config key 'optimizer', e.g. {'optimizer': 'bop'}.")
    spec = get(config["optimizer"])
    allowed = {"optimizer", *_PART_DEFAULTS, *spec.hyperparameters}
    unknown = sorted(set(config) - allowed)
    if unknown:
        raise ValueError(
            f"build() takes the optimizer part of a config, but got other keys {unknown}; valid keys for "
            f"{spec.name!r}: {sorted(allowed)}. Pass bnn_tune.TrialConfig.from_dict(config) for a whole trial config."
        )
    hparams = {k: config.get(k, v) for k, v in spec.hyperparameters.items()}
    spec.validate(hparams)
    return (spec.name, hparams, int(config.get("epochs", _PART_DEFAULTS["epochs"])),
            float(config.get("lr", _PART_DEFAULTS["lr"])))


def build(model: nn.Module, config: Any, *, steps_per_epoch: int = 1) -> CombinedOptimizer:
    """Build the optimizer for ``model`` from a :class:`~bnn_tune.config.TrialConfig` (or its optimizer part).

    Args:
        model: a model with binary layers.
        config: a validated :class:`~bnn_tune.config.TrialConfig`, or a dict with ``optimizer`` and
            optionally ``lr``, ``epochs`` and the optimizer's hyperparameters (defaults fill the rest;
            any other key raises: validate a whole trial config with ``TrialConfig.from_dict``).
        steps_per_epoch: optimizer steps per epoch (optimizers with step-based schedules need it).

    Parameters are split by :func:`route_parameters`: binary weights to the configured binary
    optimizer (after its ``prepare_model`` hook ran on ``model``), all other trainable parameters to
    Adam with ``lr``; parameters with ``requires_grad=False`` are left out with a warning.

    Returns:
        A :class:`CombinedOptimizer` with parts ``"binary"`` and ``"real"``.
    """
    name, hparams, epochs, lr = _optimizer_part(config)
    spec = get(name)
    if spec.prepare_model is not None:
        spec.prepare_model(model, hparams)
    routed = route_parameters(model, {
        "binary": lambda p: p.requires_grad and is_binary_parameter(p),
        "real": lambda p: p.requires_grad and not is_binary_parameter(p),
    })
    binary, real = routed["binary"], routed["real"]
    if not binary:
        raise ValueError("The model has no binary parameters (see bnn_tune.nn.is_binary_parameter).")
    context = dict(total_steps=epochs * steps_per_epoch, steps_per_epoch=steps_per_epoch, epochs=epochs, lr=lr)
    parts: dict[str, torch.optim.Optimizer] = {"binary": spec.make(binary, hparams, **context)}
    if real:
        parts["real"] = torch.optim.Adam(real, lr=lr)
    return CombinedOptimizer(parts)
