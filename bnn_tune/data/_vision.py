"""torchvision datasets (MNIST, Fashion-MNIST, CIFAR-10/100) as in-memory tensors.

The files are read by torchvision's own dataset classes (``download=True`` fetches them for users
with internet). Images are normalised with the usual per-channel statistics; CIFAR training batches
get the standard augmentation of seed 002 (pad 4, random 32x32 crop, horizontal flip), applied on the
device to whole batches.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .._errors import PathNotFoundError
from ._base import DataSplits, InputTransform, register_dataset, split_train_val

_STATS = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


def _tv():
    try:
        import torchvision
    except ImportError:
        raise ImportError(
            "torchvision is needed for the mnist/fashion_mnist/cifar datasets: pip install 'bnn-tune[vision]'"
        ) from None
    return torchvision.datasets


def random_crop_flip(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Batched CIFAR augmentation: zero-pad by ``pad``, random crop back to size, random h-flip.

    ``generator`` is a CPU generator (the random offsets are drawn on the CPU, then moved).
    """
    b, c, h, w = x.shape
    dev = x.device
    xp = F.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(dev)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(dev)
    rows = (oy[:, None] + torch.arange(h, device=dev))[:, None, :, None].expand(b, c, h, w + 2 * pad)
    cols = (ox[:, None] + torch.arange(w, device=dev))[:, None, None, :].expand(b, c, h, w)
    out = xp.gather(2, rows).gather(3, cols)
    flip = (torch.rand(b, generator=generator) < 0.5).to(dev)
    return torch.where(flip[:, None, None, None], out.flip(-1), out)


def _load(name: str, cls_name: str, *, val_fraction: float, root: str, download: bool) -> DataSplits:
    ds_mod = _tv()
    cls = getattr(ds_mod, cls_name)
    try:
        train = cls(root=root, train=True, download=download)
        test = cls(root=root, train=False, download=download)
    except RuntimeError as exc:
        if download or "not found" not in str(exc).lower():
            raise
        raise PathNotFoundError(
            f"The {name} files are not under data_root={root!r} (torchvision's {cls_name} layout); put them "
            "there, or allow the download with download=True (CLI: -p download=true)."
        ) from None

    def tensors(ds) -> tuple[torch.Tensor, torch.Tensor]:
        data = ds.data
        x = torch.as_tensor(np.asarray(data)) if not isinstance(data, torch.Tensor) else data
        x = x.float().div_(255.0)
        x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)  # (N,H,W) or (N,H,W,C) -> (N,C,H,W)
        y = torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)
        return x.contiguous(), y

    x, y = tensors(train)
    xte, yte = tensors(test)
    raw_test = np.asarray(test.data.numpy() if isinstance(test.data, torch.Tensor) else test.data)
    transform = InputTransform(raw_shape=tuple(raw_test.shape[1:]), raw_dtype=raw_test.dtype.name,
                               input_shape=tuple(x.shape[1:]), mean=_STATS[name][0], std=_STATS[name][1],
                               divide_by=255.0, channels_last=raw_test.ndim == 4)
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in _STATS[name])
    x, xte = (x - mean) / std, (xte - mean) / std
    xtr, ytr, xv, yv = split_train_val(x, y, val_fraction)
    num_classes = len(getattr(train, "classes", [])) or int(y.max()) + 1
    augment = random_crop_flip if name.startswith("cifar") else None
    return DataSplits(name, xtr, ytr, xv, yv, xte, yte, num_classes=num_classes, input_shape=tuple(x.shape[1:]),
                      augment=augment, input_transform=transform, x_test_raw=raw_test)


def _loader(name: str, cls_name: str):
    def load(*, val_fraction: float = 0.2, root: str = "data", download: bool = False) -> DataSplits:
        return _load(name, cls_name, val_fraction=val_fraction, root=root, download=download)

    load.__name__ = f"load_{name}"
    load.__doc__ = f"torchvision's {cls_name} as in-memory tensors (see module docs)."
    return load


for _name, _cls, _shape in (("mnist", "MNIST", (1, 28, 28)), ("fashion_mnist", "FashionMNIST", (1, 28, 28)),
                            ("cifar10", "CIFAR10", (3, 32, 32)), ("cifar100", "CIFAR100", (3, 32, 32))):
    register_dataset(_name, _loader(_name, _cls), input_shape=_shape)
