"""Dataset registry and the in-memory ``DataSplits`` container."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch

__all__ = ["DataSplits", "list_datasets", "load_dataset", "register_dataset"]

SPLIT_SEED = 20_240_601  # fixed: every trial of a sweep sees the same train/val/test split


@dataclass(frozen=True)
class DataSplits:
    """Train/val/test tensors of one dataset, kept whole in memory (and on the training device).

    Attributes:
        name: registry name.
        x_train, y_train, x_val, y_val, x_test, y_test: float inputs and int64 labels.
        num_classes: number of classes.
        input_shape: shape of one input (``(C, H, W)`` for images, ``(D,)`` for vectors).
        augment: optional batched, on-device augmentation ``f(x, generator) -> x`` for training.
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


def register_dataset(name: str, loader: Loader, *, overwrite: bool = False) -> None:
    """Register ``loader(*, val_fraction, root, download) -> DataSplits`` under ``name``."""
    if name in _DATASETS and not overwrite:
        raise ValueError(f"A dataset named {name!r} is already registered; pass overwrite=True to replace it.")
    _DATASETS[name] = loader


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
    mean = train.mean(dim=dims, keepdim=True)
    std = train.std(dim=dims, keepdim=True).clamp_min(1e-6)
    return [(t - mean) / std for t in (train, *others)]
