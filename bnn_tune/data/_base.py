"""Dataset registry and the in-memory ``DataSplits`` container."""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

__all__ = ["DataSplits", "InputTransform", "dataset_input_shape", "list_datasets", "load_dataset",
           "register_dataset"]

SPLIT_SEED = 20_240_601  # fixed: every trial of a sweep sees the same train/val/test split


def _shape_str(shape: Sequence[int]) -> str:
    return "(N, " + ", ".join(str(int(d)) for d in shape) + ")"


@dataclass(frozen=True)
class InputTransform:
    """What a dataset loader did to the user's raw arrays before the model saw them.

    ``model_input = (raw / divide_by - mean) / std`` per feature or channel, reshaped to
    ``input_shape``; ``channels_last`` raw images (``(H, W, C)``, as torchvision's CIFAR stores them)
    are moved to ``(C, H, W)`` first. ``mean``/``std`` are the training split's statistics (per
    feature for the offline datasets, the usual per-channel constants for torchvision images).
    Stored in the packed model file so :meth:`bnn_tune.export.PackedModel.predict` takes raw input.

    Attributes:
        raw_shape: shape of one raw sample (sklearn digits: ``(64,)``; MNIST: ``(28, 28)``).
        raw_dtype: numpy dtype name of the raw arrays (``"float64"``, ``"uint8"``).
        input_shape: shape of one model input (``(1, 8, 8)``).
        mean, std: one value per feature (``len == prod(input_shape)``) or per channel (``input_shape[0]``).
        divide_by: divides the raw values first (``255`` for uint8 images).
        channels_last: raw images are ``(H, W, C)``.
    """

    raw_shape: tuple[int, ...]
    raw_dtype: str
    input_shape: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    divide_by: float = 1.0
    channels_last: bool = False

    def __post_init__(self) -> None:
        n = math.prod(self.input_shape)
        if len(self.mean) != len(self.std) or len(self.mean) not in (n, self.input_shape[0]):
            raise ValueError(f"InputTransform: mean/std must have one value per feature ({n}) or per channel "
                             f"({self.input_shape[0]}), but got {len(self.mean)} and {len(self.std)}.")
        if math.prod(self.raw_shape) != n:
            raise ValueError(f"InputTransform: raw_shape {self.raw_shape} and input_shape {self.input_shape} "
                             "hold different numbers of values.")

    def to_dict(self) -> dict[str, Any]:
        return {"raw_shape": list(self.raw_shape), "raw_dtype": self.raw_dtype,
                "input_shape": list(self.input_shape), "mean": list(self.mean), "std": list(self.std),
                "divide_by": self.divide_by, "channels_last": self.channels_last}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> InputTransform:
        return cls(raw_shape=tuple(int(v) for v in d["raw_shape"]), raw_dtype=str(d["raw_dtype"]),
                   input_shape=tuple(int(v) for v in d["input_shape"]),
                   mean=tuple(float(v) for v in d["mean"]), std=tuple(float(v) for v in d["std"]),
                   divide_by=float(d.get("divide_by", 1.0)), channels_last=bool(d.get("channels_last", False)))

    def __call__(self, x: Any) -> torch.Tensor:
        """Raw batch ``[N, *raw_shape]`` -> model input ``float32 [N, *input_shape]``.

        Integer images are also accepted in the model's layout (``[N, *input_shape]``); float input of
        that shape is refused, as it cannot be told apart from already-normalized input.

        Raises:
            ValueError: the shape is not one of those; the message names the expected shape.
        """
        t = x.detach() if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(np.asarray(x)))
        shape = tuple(t.shape[1:])
        # raw values in the model's layout are accepted only when unambiguous: integer pixels
        int_pixels = not t.dtype.is_floating_point and np.dtype(self.raw_dtype).kind in "ui"
        if t.ndim < 2 or not (shape == self.raw_shape or (shape == self.input_shape and int_pixels)):
            accepted = _shape_str(self.raw_shape)
            if self.input_shape != self.raw_shape and np.dtype(self.raw_dtype).kind in "ui":
                accepted += f" or {_shape_str(self.input_shape)}"
            raise ValueError(f"Expected a batch of raw inputs of shape {accepted} ({self.raw_dtype}, as the "
                             f"training data came), but got shape {tuple(t.shape)}; for inputs already "
                             f"normalized like the training data, of shape {_shape_str(self.input_shape)}, "
                             "pass preprocessed=True.")
        t = t.to(torch.float32)  # float32 throughout, in the loaders' order: bit-identical to training inputs
        if shape == self.raw_shape and self.channels_last:
            t = t.movedim(-1, 1)
        t = t.reshape(t.shape[0], *self.input_shape)
        if self.divide_by != 1.0:
            t = t / self.divide_by
        n = math.prod(self.input_shape)
        stat_shape = (1, *self.input_shape) if len(self.mean) == n else (1, -1) + (1,) * (len(self.input_shape) - 1)
        mean = torch.tensor(self.mean, dtype=torch.float32).reshape(stat_shape)
        std = torch.tensor(self.std, dtype=torch.float32).reshape(stat_shape)
        return (t - mean) / std


@dataclass(frozen=True)
class DataSplits:
    """Train/val/test tensors of one dataset, kept whole in memory (and on the training device).

    Attributes:
        name: registry name.
        x_train, y_train, x_val, y_val, x_test, y_test: float inputs and int64 labels.
        num_classes: number of classes.
        input_shape: shape of one input (``(C, H, W)`` for images, ``(D,)`` for vectors).
        augment: optional batched, on-device augmentation ``f(x, generator) -> x`` for training.
        input_transform: how raw arrays became the inputs (``None``: unknown, e.g. user tensors).
        x_test_raw: the test inputs as the user has them (before ``input_transform``), or ``None``.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    input_shape: tuple[int, ...]
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None
    input_transform: InputTransform | None = field(default=None, compare=False)
    x_test_raw: np.ndarray | None = field(default=None, repr=False, compare=False)

    def to(self, device: str | torch.device, *, channels_last: bool = False) -> DataSplits:
        """The splits on ``device``; ``channels_last`` lays out 4-D inputs NHWC (values unchanged)."""
        def move(k: str) -> torch.Tensor:
            t = getattr(self, k).to(device)
            if channels_last and t.dim() == 4:
                t = t.contiguous(memory_format=torch.channels_last)
            return t

        moved: dict[str, Any] = {k: move(k) for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")}
        return replace(self, **moved)

    def __repr__(self) -> str:
        return (
            f"DataSplits({self.name!r}, train={len(self.y_train)}, val={len(self.y_val)}, test={len(self.y_test)}, "
            f"input_shape={self.input_shape}, num_classes={self.num_classes})"
        )


Loader = Callable[..., DataSplits]
_DATASETS: dict[str, Loader] = {}
_SHAPES: dict[str, tuple[int, ...]] = {}


def register_dataset(name: str, loader: Loader, *, overwrite: bool = False,
                     input_shape: tuple[int, ...] | None = None) -> None:
    """Register ``loader(*, val_fraction, root, download) -> DataSplits`` under ``name``.

    ``input_shape`` (one input's shape, when known without loading) lets a config be checked against
    the model before any data is read (:func:`dataset_input_shape`).
    """
    if name in _DATASETS and not overwrite:
        raise ValueError(f"A dataset named {name!r} is already registered; pass overwrite=True to replace it.")
    _DATASETS[name] = loader
    _SHAPES.pop(name, None)
    if input_shape is not None:
        _SHAPES[name] = tuple(int(d) for d in input_shape)


def dataset_input_shape(name: str) -> tuple[int, ...] | None:
    """The shape of one input of a registered dataset, or ``None`` when it is only known after loading."""
    return _SHAPES.get(name)


def list_datasets() -> list[str]:
    """Sorted names of the registered datasets."""
    return sorted(_DATASETS)


_CACHE: dict[tuple, DataSplits] = {}


def load_dataset(
    name: str, *, val_fraction: float = 0.2, root: str = "data", download: bool = False, cache: bool = True
) -> DataSplits:
    """Load a registered dataset as in-memory tensors (CPU); results are cached per process.

    Args:
        name: one of :func:`list_datasets`.
        val_fraction: fraction of the training split held out for validation.
        root: directory of torchvision datasets.
        download: allow torchvision to download missing files.
        cache: reuse a previous load with the same arguments.

    Example:
        >>> d = load_dataset("digits")
        >>> d.num_classes, d.input_shape
        (10, (1, 8, 8))
    """
    if name not in _DATASETS:
        close = difflib.get_close_matches(str(name), list_datasets(), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"Unknown dataset {name!r}. Available: {list_datasets()}.{hint}")
    if not 0 < val_fraction < 1:
        raise ValueError(f"`val_fraction` must be in (0, 1), but got val_fraction={val_fraction}.")
    key = (name, float(val_fraction), str(root), bool(download))
    if cache and key in _CACHE:
        return _CACHE[key]
    splits = _DATASETS[name](val_fraction=val_fraction, root=root, download=download)
    if cache:
        _CACHE[key] = splits
    return splits


def split_train_val(
    x: torch.Tensor, y: torch.Tensor, val_fraction: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stratification-free fixed random split of ``(x, y)`` into train and validation."""
    g = torch.Generator().manual_seed(SPLIT_SEED)
    perm = torch.randperm(len(y), generator=g)
    n_val = max(1, int(round(len(y) * val_fraction)))
    val, tr = perm[:n_val], perm[n_val:]
    return x[tr], y[tr], x[val], y[val]


def standardize(train: torch.Tensor, *others: torch.Tensor, dims: tuple[int, ...] = (0,)) -> list[torch.Tensor]:
    """Standardize with the training statistics (per feature/channel); constant features stay 0."""
    mean, std = standard_stats(train, dims=dims)
    return [(t - mean) / std for t in (train, *others)]


def standard_stats(train: torch.Tensor, *, dims: tuple[int, ...] = (0,)) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean, std)`` of the training inputs over ``dims`` (kept), std clamped to 1e-6."""
    return train.mean(dim=dims, keepdim=True), train.std(dim=dims, keepdim=True).clamp_min(1e-6)
