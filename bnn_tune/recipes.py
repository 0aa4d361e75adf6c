"""Training recipes around one trial: distillation, two-step training, initialisation from the twin.

Every recipe is chosen by flat config keys (validated in :class:`bnn_tune.config.TrialConfig`) and
applied by :class:`Recipe`, which :class:`bnn_tune.train.Trainer` calls at four points: once when the
model is built (before the optimizer, so the optimizer's ``prepare_model`` sees the initial weights),
at the start of every epoch, for the loss of every batch, and after every optimizer step.

**The real-valued twin** is ``build_model(..., binary=False)`` with the trial's model, width, depth and
batch-norm momentum (float weights, ReLU), trained with AdamW (``teacher_lr``, default 3e-3) for
``teacher_epochs`` (default ``epochs``) on the trial's training split, batch size, augmentation and
``max_steps_per_epoch``, seeded by the trial's ``seed``. It is trained inside the torch RNG of its own
(``torch.random.fork_rng``), so the student's initialisation and data order are the same whether the
twin was trained or read from the cache.

**Distillation** (``teacher``; Hinton et al. 2015, as the BNEW poster's "Distillation: Yes" columns)::

    loss = cross_entropy(student, y) + distill_weight * T^2 * KL(softmax(teacher / T) || softmax(student / T))

with ``T = distill_temperature`` (default 4) and ``distill_weight`` (default 1), on the same augmented
batch; the teacher runs in eval mode without gradients. The epoch's ``train_loss`` is this whole loss. ``teacher="twin"`` trains the twin first;
a path loads the twin's weights from a file (safetensors, or a state dict saved with ``torch.save``
and read with ``weights_only=True``; a :class:`Trainer` checkpoint of a ``binary=False`` run is not
what is meant: save ``twin.state_dict()``). :func:`save_twin` writes such a file.

**Two-step training** (``recipe="two_step"``; seed 003, Liu et al. 2021's scheme, also seed 004's
"two-step training"): for the first ``round(step1_fraction * epochs)`` epochs (at least 1, at most
``epochs - 1``) the binary layers compute with their *real* latent weights (binary activations
stay) and the latent weights get decoupled weight decay ``w~ <- (1 - eta step1_weight_decay) w~``
after every step (eta = the binary optimizer's current ``lr``); then the weight quantizers are put
back and training goes on from those latent weights without that decay. Only for optimizers with
latent weights (``latent_adam``, ``bmd``); others are rejected at config time. Validation accuracy
during step 1 is the real-weight network's, not the deployable one's.

**Initialisation from the twin** (``init_from="twin"``; the Larq guide): every parameter of the
binary model is copied from the trained twin, in module order (the two models have the same
parameter shapes; batch-norm running statistics are left fresh because binary layers produce a
different scale). The optimizer's ``prepare_model`` then runs as usual, so Bop, Bop2 and the filters
start from the signs of the twin's weights, LatentAdam rescales them when ``init_scale`` is set,
BNEW clips them to [-1, 1] and BMD reads them through its tanh.

**Cost accounting.** A trial that trains a twin (or reads one from the cache) pays ``teacher_epochs``
*trial-epochs*: :attr:`Recipe.teacher_epochs`. Every :class:`~bnn_tune.train.EpochMetrics` carries
``trial_epochs = teacher_epochs + epoch``, the step at which :func:`bnn_tune.objective` calls
``trial.report`` (so Optuna's pruners compare trials at equal spent budget), and a metric the Ray
trainable reports (use ``time_attr="trial_epochs"`` in ASHA/HyperBand for the same). The charge is
the same whether the twin was trained or found in the cache (the budget is the recipe's, not the
worker's luck). The seconds spent obtaining the twin (training it, or reading the cache) are added
to the ``epoch_time`` of the first epoch the trainer runs, so Ray's ``time_total_s`` and any sum of
``epoch_time`` include them. A teacher read from a file costs no trial-epochs.

**Cache.** A trained twin is stored as ``<teacher_cache_dir>/twin-<hash>.safetensors`` (``hash`` = the
first 16 hex digits of the SHA-256 of :func:`twin_key`'s JSON: dataset, model, width, depth,
bn_momentum, seed, val_fraction, augment, batch_size, max_steps_per_epoch, teacher_epochs,
teacher_lr) and kept in this process's memory; other trials of the same worker (or of any worker
sharing the folder) with the same key load it instead of training. Writes are atomic (temporary file
then ``os.replace``). :func:`bnn_tune.objective` uses ``<artifact_dir>/teachers`` and the Ray trainable
``<experiment folder>/teachers`` unless the config sets ``teacher_cache_dir``.

Example:
    >>> from bnn_tune import fit
    >>> r = fit({"dataset": "synthetic", "epochs": 2, "max_steps_per_epoch": 2, "teacher": "twin",
    ...          "teacher_epochs": 1, "init_from": "twin"})
    >>> [m.trial_epochs for m in r.history]
    [2, 3]

References:
    Hinton, Vinyals & Dean 2015 (distillation); Paren & Poudel, BNEW poster (distillation for every
    optimizer); Liu et al. 2021, "How do Adam and training strategies help BNNs optimization?"
    (two-step training); Larq "Training BNNs" guide (initialise from a trained real-valued model).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .config import TrialConfig
from .data import DataSplits
from .nn import build_model, is_binary_parameter

__all__ = [
    "DEFAULTS",
    "RECIPE_KEYS",
    "Recipe",
    "clear_memory_cache",
    "copy_twin_parameters",
    "distillation_loss",
    "load_twin",
    "save_twin",
    "train_twin",
    "twin_key",
    "without_recipe",
]

RECIPE_KEYS: tuple[str, ...] = ("teacher", "teacher_epochs", "teacher_lr", "distill_weight", "distill_temperature",
                                "recipe", "step1_fraction", "step1_weight_decay", "init_from")
"""The config keys of this module (``teacher_cache_dir`` aside): they change training, not the model."""

DEFAULTS: dict[str, float] = {
    "teacher_lr": 3e-3,
    "distill_weight": 1.0,
    "distill_temperature": 4.0,
    "step1_fraction": 0.5,
    "step1_weight_decay": 5e-6,
}
"""Values used when the corresponding config key is ``None``."""

_MEMORY: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()
_MEMORY_SIZE = 4


def clear_memory_cache() -> None:
    """Forget the twins kept in this process's memory (the disk cache is untouched)."""
    _MEMORY.clear()


def _get(cfg: TrialConfig, key: str) -> float:
    value = getattr(cfg, key)
    return DEFAULTS[key] if value is None else value


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, averaged over the batch.

    The ``T^2`` keeps the gradient's scale independent of ``T`` (Hinton et al. 2015).

    Example:
        >>> s = torch.tensor([[2.0, 0.0]])
        >>> float(distillation_loss(s, s, 4.0))
        0.0
    """
    t = float(temperature)
    return F.kl_div(F.log_softmax(student_logits / t, dim=1), F.log_softmax(teacher_logits / t, dim=1),
                    reduction="batchmean", log_target=True) * (t * t)


def without_recipe(cfg: TrialConfig) -> TrialConfig:
    """``cfg`` with every recipe key at its default: the same model, built without obtaining a twin.

    For code that only needs the trained model's skeleton (export loading a checkpoint).

    Example:
        >>> c = TrialConfig.from_dict({"teacher": "twin", "distill_weight": 2.0})
        >>> without_recipe(c).teacher is None
        True
    """
    defaults = TrialConfig()
    return cfg.replace(**{k: getattr(defaults, k) for k in RECIPE_KEYS})


# ----------------------------------------------------------------------------- the twin
def _build_twin(cfg: TrialConfig, data: DataSplits) -> nn.Module:
    return build_model(cfg.model, data.input_shape, data.num_classes, binary=False, width=cfg.width,
                       depth=cfg.depth, bn_momentum=cfg.bn_momentum)


def twin_key(cfg: TrialConfig) -> dict[str, Any]:
    """Everything the trained twin depends on (the cache key, before hashing)."""
    return {"dataset": cfg.dataset, "model": cfg.model, "width": cfg.width, "depth": cfg.depth,
            "bn_momentum": cfg.bn_momentum, "seed": cfg.seed, "val_fraction": cfg.val_fraction,
            "augment": cfg.augment, "batch_size": cfg.batch_size, "max_steps_per_epoch": cfg.max_steps_per_epoch,
            "teacher_epochs": cfg.teacher_epochs or cfg.epochs, "teacher_lr": _get(cfg, "teacher_lr")}


def _hash(key: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(dict(key), sort_keys=True).encode()).hexdigest()[:16]


def _minibatches(data: DataSplits, batch_size: int, steps: int, generator: torch.Generator,
                 augment: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    perm = torch.randperm(len(data.y_train), generator=generator).to(data.x_train.device)
    for i in range(steps):
        idx = perm[i * batch_size: (i + 1) * batch_size]
        if len(idx) == 0:
            return
        x = data.x_train[idx]
        if augment and data.augment is not None:
            x = data.augment(x, generator)
        yield x, data.y_train[idx]


def train_twin(cfg: TrialConfig, data: DataSplits, device: torch.device | str = "cpu") -> nn.Module:
    """Train the real-valued twin of ``cfg``'s model (see the module documentation); eval mode.

    The global torch RNG is left as it was found.
    """
    epochs = int(cfg.teacher_epochs or cfg.epochs)
    steps = math.ceil(len(data.y_train) / cfg.batch_size)
    if cfg.max_steps_per_epoch:
        steps = min(steps, cfg.max_steps_per_epoch)
    devices = [torch.device(device).index or 0] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(cfg.seed)
        model = _build_twin(cfg, data).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=_get(cfg, "teacher_lr"), weight_decay=0.0)
        gen = torch.Generator().manual_seed(cfg.seed + 1)
        model.train()
        for _ in range(epochs):
            for x, y in _minibatches(data, cfg.batch_size, steps, gen, cfg.augment):
                loss = F.cross_entropy(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    return model.eval()


def save_twin(model: nn.Module, path: str | os.PathLike[str], *, metadata: Mapping[str, str] | None = None) -> None:
    """Write a twin's state dict as safetensors (atomically), readable by ``teacher=<path>``."""
    from safetensors.torch import save_file

    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=dict(metadata or {}))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _read_state(path: str) -> dict[str, torch.Tensor]:
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping):
        raise ValueError(f"The teacher file {path!r} must hold a state dict, but holds {type(state).__name__}.")
    return dict(state)


def load_twin(cfg: TrialConfig, data: DataSplits, path: str, device: torch.device | str = "cpu") -> nn.Module:
    """The twin of ``cfg``'s model with weights read from ``path`` (no unpickling); eval mode."""
    devices = [torch.device(device).index or 0] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        model = _build_twin(cfg, data)
    try:
        model.load_state_dict(_read_state(path))
    except RuntimeError as exc:
        raise ValueError(f"The teacher file {path!r} does not fit the real-valued twin of model={cfg.model!r} "
                         f"(width={cfg.width}, depth={cfg.depth}): {str(exc).splitlines()[0]}") from None
    return model.to(device).eval()


def _cached_twin(cfg: TrialConfig, data: DataSplits, device: torch.device) -> tuple[nn.Module, bool]:
    """The trained twin, from memory, from ``teacher_cache_dir`` or freshly trained (then stored)."""
    key = _hash(twin_key(cfg))
    path = os.path.join(cfg.teacher_cache_dir, f"twin-{key}.safetensors") if cfg.teacher_cache_dir else None
    state = _MEMORY.get(key)
    if state is None and path is not None and os.path.isfile(path):
        state = _read_state(path)
    if state is not None:
        devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            model = _build_twin(cfg, data)
        model.load_state_dict(state)
        _remember(key, state)
        return model.to(device).eval(), True
    model = train_twin(cfg, data, device)
    _remember(key, {k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
    if path is not None:
        save_twin(model, path, metadata={"twin_key": json.dumps(twin_key(cfg), sort_keys=True)})
    return model, False


def _remember(key: str, state: dict[str, torch.Tensor]) -> None:
    _MEMORY[key] = state
    _MEMORY.move_to_end(key)
    while len(_MEMORY) > _MEMORY_SIZE:
        _MEMORY.popitem(last=False)


def copy_twin_parameters(twin: nn.Module, model: nn.Module) -> None:
    """Copy every parameter of ``twin`` into ``model`` in module order (shapes must match one to one)."""
    src, dst = list(twin.parameters()), list(model.parameters())
    shapes = [tuple(p.shape) for p in src], [tuple(p.shape) for p in dst]
    if shapes[0] != shapes[1]:
        raise ValueError(f"The twin's parameter shapes {shapes[0]} do not match the binary model's {shapes[1]}.")
    with torch.no_grad():
        for s, d in zip(src, dst):
            d.copy_(s)


# ----------------------------------------------------------------------------- the recipe
def _binary_layers(model: nn.Module) -> list[Any]:
    """The binary layers (a binary weight and a ``weight_quantizer``) of ``model``."""
    return [m for m in model.modules()
            if hasattr(m, "weight_quantizer") and isinstance(m.weight, torch.Tensor) and is_binary_parameter(m.weight)]


class _RealWeight(nn.Module):
    """Step 1's weight quantizer: the identity, standing in for the layer's own quantizer.

    The replaced quantizer is kept (not as a child module) and its state (e.g. BMD's ``beta``) is saved
    and loaded under the same keys, so a checkpoint written in step 1 loads into a fresh trainer.
    """

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        object.__setattr__(self, "inner", inner)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w

    def _save_to_state_dict(self, destination, prefix, keep_vars):  # type: ignore[no-untyped-def]
        self.inner.state_dict(destination=destination, prefix=prefix, keep_vars=keep_vars)

    def _load_from_state_dict(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.inner._load_from_state_dict(*args, **kwargs)


class Recipe:
    """The training recipe of one trial; :class:`~bnn_tune.train.Trainer` calls its hooks.

    Built with the freshly initialised binary model, before the optimizer: obtains the twin when the
    config asks for one (training it or reading the cache), loads a teacher file, and copies the
    twin's weights into ``model`` for ``init_from="twin"``.

    Attributes:
        teacher: the distillation teacher (eval mode) or ``None``.
        teacher_epochs: trial-epochs charged for the twin (0 without one).
        from_cache: whether the twin came from the cache.
        setup_seconds: seconds spent obtaining the twin/teacher (added once to an epoch's time).
    """

    def __init__(self, cfg: TrialConfig, model: nn.Module, data: DataSplits, device: torch.device) -> None:
        self.config = cfg
        self.teacher: nn.Module | None = None
        self.teacher_epochs = 0
        self.from_cache = False
        t0 = time.perf_counter()
        twin = None
        if "twin" in (cfg.teacher, cfg.init_from):
            twin, self.from_cache = _cached_twin(cfg, data, device)
            self.teacher_epochs = int(cfg.teacher_epochs or cfg.epochs)
        if cfg.teacher == "twin":
            self.teacher = twin
        elif cfg.teacher is not None:
            self.teacher = load_twin(cfg, data, cfg.teacher, device)
        if self.teacher is not None:
            for p in self.teacher.parameters():
                p.requires_grad_(False)
        if cfg.init_from == "twin" and twin is not None:
            copy_twin_parameters(twin, model)
        self.setup_seconds = time.perf_counter() - t0
        self._unreported_seconds = self.setup_seconds
        self._layers = _binary_layers(model) if cfg.recipe == "two_step" else []
        self.step1_epochs = 0
        if cfg.recipe == "two_step":
            self.step1_epochs = min(max(1, round(_get(cfg, "step1_fraction") * cfg.epochs)), cfg.epochs - 1)
        self._in_step1 = False

    # ------------------------------------------------------------------ hooks
    def take_setup_time(self) -> float:
        """The not-yet-reported setup seconds (then 0): added to the next epoch's ``epoch_time``."""
        t, self._unreported_seconds = self._unreported_seconds, 0.0
        return t

    def start_epoch(self, epoch: int) -> None:
        """Before epoch ``epoch + 1`` (``epoch`` finished so far): enter or leave step 1 of two-step."""
        if not self._layers:
            return
        step1 = epoch < self.step1_epochs
        if step1 and not self._in_step1:
            for layer in self._layers:
                layer.weight_quantizer = _RealWeight(layer.weight_quantizer)
        elif not step1 and self._in_step1:
            for layer in self._layers:
                layer.weight_quantizer = layer.weight_quantizer.inner
        self._in_step1 = step1

    def loss(self, logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The training loss of one batch: cross-entropy, plus distillation with a teacher."""
        loss = F.cross_entropy(logits, y)
        if self.teacher is None:
            return loss
        with torch.no_grad():
            teacher_logits = self.teacher(x)
        return loss + _get(self.config, "distill_weight") * distillation_loss(
            logits, teacher_logits, _get(self.config, "distill_temperature"))

    @torch.no_grad()
    def after_step(self, optimizer: torch.optim.Optimizer) -> None:
        """After an optimizer step: step 1's decoupled weight decay on the latent weights."""
        if not self._in_step1:
            return
        wd = _get(self.config, "step1_weight_decay")
        if wd == 0:
            return
        binary = getattr(optimizer, "optimizers", {}).get("binary", optimizer)
        for group in binary.param_groups:
            factor = 1.0 - float(group["lr"]) * wd
            for p in group["params"]:
                if is_binary_parameter(p):
                    p.mul_(factor)
