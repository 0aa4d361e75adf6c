"""Datasets as in-memory tensors: ``digits`` (default, offline), ``mnist1d``, ``mnist_5k`` (5,000 real 28x28
MNIST digits, offline with ``bnn-tune[hpobench]``), ``synthetic``, and the torchvision loaders ``mnist``,
``fashion_mnist``, ``cifar10``, ``cifar100``.

Example:
    >>> from bnn_tune import data
    >>> sorted(data.list_datasets())[:3]
    ['cifar10', 'cifar100', 'digits']
"""

from __future__ import annotations

from . import _offline, _vision  # noqa: F401  (registers the built-in datasets)
from ._base import (
    DataSplits,
    InputTransform,
    dataset_input_shape,
    list_datasets,
    load_dataset,
    register_dataset,
)
from ._offline import load_digits, load_mnist1d, load_mnist_5k, load_synthetic
from ._vision import random_crop_flip

__all__ = [
    "DataSplits",
    "InputTransform",
    "dataset_input_shape",
    "list_datasets",
    "load_digits",
    "load_dataset",
    "load_mnist1d",
    "load_mnist_5k",
    "load_synthetic",
    "random_crop_flip",
    "register_dataset",
]
